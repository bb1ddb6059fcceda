// Publish one close request to job-closer's close queue, the way the worker expects it.
//
//   Needs com.rabbitmq:amqp-client (5.x) on the class path.
//   AMQP_URL=amqp://user:pass@rabbitmq:5672/%2f CLOSE_QUEUE=linkedin.jobs.close \
//       java -cp amqp-client.jar:slf4j-api.jar PublishCloseRequest.java JOB-150421
//
// Exits 0 once the broker has confirmed the message, 1 when it did not take it.
import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicBoolean;

public final class PublishCloseRequest {
    public static void main(String[] args) {
        String amqpUrl = env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        String queue = env("CLOSE_QUEUE", "linkedin.jobs.close");
        String externalId = args.length > 0 ? args[0] : "JOB-1";
        try {
            publish(amqpUrl, queue, closeRequest(externalId).getBytes(StandardCharsets.UTF_8));
        } catch (Exception e) {
            System.err.println("error: " + e.getMessage());
            System.exit(1);
        }
        System.out.println("Published the close request for " + externalId + " to '" + queue + "'.");
    }

    static void publish(String amqpUrl, String queue, byte[] body) throws Exception {
        ConnectionFactory factory = new ConnectionFactory();
        factory.setUri(amqpUrl);
        try (Connection connection = factory.newConnection("close-request producer");
                Channel channel = connection.createChannel()) {
            // Publisher confirms: the broker acknowledges every message it has taken.
            channel.confirmSelect();
            // With `mandatory`, a message no queue took comes back (before its confirm) instead of
            // being dropped.
            AtomicBoolean returned = new AtomicBoolean(false);
            channel.addReturnListener(message -> returned.set(true));
            AMQP.BasicProperties properties = new AMQP.BasicProperties.Builder()
                    .contentType("application/json")
                    .deliveryMode(2) // persistent: survives a broker restart
                    .messageId(UUID.randomUUID().toString())
                    .build();
            channel.basicPublish("", queue, true, properties, body);
            // Throws when the broker refused the message or did not confirm it in time.
            channel.waitForConfirmsOrDie(10_000);
            if (returned.get()) {
                throw new IOException("no queue '" + queue + "' took the message; is job-closer's queue declared?");
            }
        }
    }

    /** One LinkedIn job element; see schema/close-request.schema.json for every rule. */
    static String closeRequest(String externalId) {
        // Built by hand to need no JSON library; real code would use Jackson or Gson.
        return "{"
                + "\"companyApplyUrl\":" + json("https://jobs.example.com/apply/" + externalId) + ","
                + "\"externalJobPostingId\":" + json(externalId) + ","
                + "\"description\":\"This position has been filled.\","
                + "\"title\":\"Senior Engineer\","
                + "\"listedAt\":1700000000000,"
                + "\"location\":\"San Francisco, California\""
                + "}";
    }

    /** A JSON string literal. */
    static String json(String text) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }

    static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }
}
