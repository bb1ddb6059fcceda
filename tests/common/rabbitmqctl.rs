//! `rabbitmqctl` for tests that need a broker user of their own or must cut one connection: they
//! touch only the users and connections they made, never anything broker-wide.

/// Runs `rabbitmqctl`, failing the test (with its stderr) when it fails; its stdout.
pub async fn rabbitmqctl(args: &[&str]) -> String {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("rabbitmqctl cannot run ({e}); these tests need it on PATH"));
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `label-<uuid>`: a name (or password) no other string in the run resembles.
pub fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

/// A broker user of this test's own, with a password no other string in the run resembles, so a
/// leaked password is found by a plain search. Deleted when dropped.
pub struct BrokerUser {
    pub name: String,
    pub password: String,
}

impl BrokerUser {
    pub async fn new() -> BrokerUser {
        let user = BrokerUser {
            name: unique("test-user"),
            password: unique("AmqpPw"),
        };
        rabbitmqctl(&["add_user", &user.name, &user.password]).await;
        user.grant().await;
        user
    }

    pub async fn grant(&self) {
        rabbitmqctl(&["set_permissions", "-p", "/", &self.name, ".*", ".*", ".*"]).await;
    }

    pub async fn revoke(&self) {
        rabbitmqctl(&["clear_permissions", "-p", "/", &self.name]).await;
    }

    /// A new password, as an operator rotating it would set; connections already open stay.
    pub async fn change_password(&mut self, password: &str) {
        rabbitmqctl(&["change_password", &self.name, password]).await;
        self.password = password.to_owned();
    }

    pub fn url(&self) -> String {
        format!("amqp://{}:{}@127.0.0.1:5672/%2f", self.name, self.password)
    }
}

/// Deleted even when the test panics; blocking here needs no runtime.
impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", "--quiet", &self.name])
            .output();
    }
}

/// Closes the broker connections whose client-given name is `name` (never anyone else's); whether
/// there was one.
pub async fn close_connection_named(name: &str) -> bool {
    let listing = rabbitmqctl(&[
        "list_connections",
        "pid",
        "client_properties",
        "--quiet",
        "--no-table-headers",
    ])
    .await;
    // Lines are `<pid>\t[{"capabilities",...},{"connection_name","NAME"},...]`.
    let property = format!("{{\"connection_name\",\"{name}\"}}");
    let mut closed = false;
    for line in listing.lines().filter(|line| line.contains(&property)) {
        let pid = line.split('\t').next().unwrap();
        rabbitmqctl(&["close_connection", pid, "test: simulated broker loss"]).await;
        closed = true;
    }
    closed
}
