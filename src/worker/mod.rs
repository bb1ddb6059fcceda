//! `job-closer run`: the daemon. It holds a broker session (connection, queues, consumer), feeds each
//! delivery through validation into the batcher, hands due batches to send tasks, and on a broker
//! failure starts a new session with backoff for as long as it takes.
//!
//! A session is opened (queues declared, channels and consumers started), consumed (the main loop)
//! and drained (on shutdown: send what is batched and wait for the send tasks; on a lost
//! connection: let them give back what only waits).
//!
//! A session holds two connections to one node ([`flow`]): the consuming one, named
//! `AMQP_CONNECTION_NAME`, carries the consumers and their acks; the publishing one carries the
//! confirm channel every dead letter and pending check goes through. A broker alarm blocks only the
//! connection that publishes, so acks never wait behind a blocked publish. Either connection lost
//! ends the session; at its end both are closed, or their sockets severed when a blocked one cannot
//! say goodbye.
//!
//! Each session declares the outcome exchange when `OUTCOME_EXCHANGE` is set; outcomes themselves
//! are the settler's to publish ([`settle::Settler::finish`]), once a close request ended.
//!
//! With task checks on, the session also runs the task verifier ([`verify`]) on its own channel
//! of the consuming connection: it shares the session's confirm channel, shutdown and task tracker
//! (each channel settles with its own [`settle::Settler`]), and a dead verifier ends the session.
//!
//! While an integration fault holds the worker ([`hold`]), the session cancels its consumer, gives
//! back every delivery it holds that is not being probed with, and consumes again once the hold
//! opens. Deliveries are batched apart by contract and by whether they are redeliveries (or
//! duplicates of an id in hand, see [`recent`]): a redelivered close is likely a re-close. Batches
//! are cut at the size [`isolation`] asks for — `BATCH_SIZE`, or less while LinkedIn often refuses
//! requests for jobs it does not name ([`sizing`] says how much less).
//!
//! With tracing on ([`crate::telemetry`]), each delivery gets its `process` span when it arrives
//! ([`Item::span`]); everything that settles it runs inside that span, and each request to LinkedIn
//! is a span of its own linked to the spans of the elements it carries.
//!
//! Shutdown is "signal out, wait for the drops": the shutdown token stops consuming, the batcher is
//! flushed, send tasks finish what is in flight (or give back what is only waiting) and the task
//! tracker says when they are all gone; past `SHUTDOWN_TIMEOUT_MS` the connection is closed and the
//! broker returns whatever is still unacked.

mod ack_runs;
pub(crate) mod attempt;
pub(crate) mod decide;
pub(crate) mod flow;
pub(crate) mod hold;
pub(crate) mod isolation;
pub(crate) mod recent;
mod send;
pub(crate) mod settle;
pub(crate) mod sizing;
pub(crate) mod verify;

use crate::amqp::{self, AmqpError, Connected, Connector, close_or_sever};
use crate::batch::{Batch, Batcher, IdKey};
use crate::close_request::{self, CloseRequest};
use crate::config::{AlreadyClosed, AmqpArgs, AmqpUrl};
use crate::dead_letter::{Failure, REPLAY_COUNT};
use crate::linkedin::LinkedInClient;
use crate::metrics::Metrics;
use crate::outcome::{self, Outcomes};
use crate::rate_limit::RateLimiter;
use crate::retry::RetryPolicy;
use crate::tasks::{self, Schedule};
use crate::telemetry::spans;
use flow::{SessionFlow, publishing_connection_name};
use futures_util::StreamExt;
use hold::Hold;
use isolation::{Isolation, Lineage};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use recent::{InHand, Recent};
use send::{Group, SessionHandle};
use settle::Settler;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, warn};
use verify::Verifier;

/// Everything `run` needs, resolved from the settings.
pub(crate) struct WorkerConfig {
    pub(crate) amqp: AmqpArgs,
    /// What the broker shows for this worker's connection (`AMQP_CONNECTION_NAME`).
    pub(crate) connection_name: String,
    pub(crate) batch_size: usize,
    pub(crate) linger: Duration,
    /// Half-life of the culprit estimate (`CULPRIT_HALF_LIFE_MS`).
    pub(crate) culprit_half_life: Duration,
    pub(crate) prefetch: u16,
    pub(crate) max_in_flight: usize,
    pub(crate) rate_limit_per_minute: u32,
    /// Elements per UTC day (`RATE_LIMIT_PER_DAY`); 0 = unlimited.
    pub(crate) rate_limit_per_day: u64,
    /// What a close LinkedIn says is already closed becomes (`ALREADY_CLOSED`).
    pub(crate) already_closed: AlreadyClosed,
    pub(crate) retry: RetryPolicy,
    pub(crate) shutdown_timeout: Duration,
    /// Where accepted closes wait to be verified; `None` with TASK_CHECK=off.
    pub(crate) task_checks: Option<Arc<Schedule>>,
    /// Where outcome messages go (`OUTCOME_EXCHANGE`, and each request's `reply_to`).
    pub(crate) outcomes: Arc<Outcomes>,
}

/// State shared by every session and send task of one worker.
pub(crate) struct Shared {
    pub(crate) linkedin: LinkedInClient,
    pub(crate) limiter: RateLimiter,
    pub(crate) in_flight: Semaphore,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) retry: RetryPolicy,
    /// Set while an integration fault holds the worker.
    pub(crate) hold: Hold,
    /// Ids accepted within the hour, and ids in hand.
    pub(crate) recent: Arc<Recent>,
    /// The culprit estimate: the size of fresh requests and of the pieces of refused ones.
    pub(crate) isolation: Arc<Isolation>,
    pub(crate) already_closed: AlreadyClosed,
    /// Where accepted closes wait to be verified; `None` with TASK_CHECK=off.
    pub(crate) task_checks: Option<Arc<Schedule>>,
}

/// A delivery that passed validation, on its way to LinkedIn.
pub(crate) struct Item {
    pub(crate) delivery: Delivery,
    pub(crate) request: CloseRequest,
    /// Replayed from the dead-letter queue: always sent, whatever this worker remembers.
    pub(crate) replayed: bool,
    /// Never read: held so that the id counts as in hand until the item is dropped.
    pub(crate) _in_hand: InHand,
    /// `process <close queue>`, from the delivery to its settling (`Span::none()` with tracing off):
    /// every settling step runs inside it, and the request to LinkedIn links to it.
    pub(crate) span: tracing::Span,
}

/// What a batch shares: the contract, and whether its deliveries are suspected re-closes.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct BatchKey {
    pub(crate) contract: Option<String>,
    /// Redelivered by the broker, or a duplicate of an id already in hand.
    pub(crate) suspect: bool,
}

/// Whether a delivery was sent back from the dead-letter queue by `dlq replay`.
fn is_replayed(delivery: &Delivery) -> bool {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(REPLAY_COUNT))
        .is_some()
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    /// The broker refuses the configuration (e.g. queue arguments differ): an operator must act.
    #[error(transparent)]
    Fatal(AmqpError),
}

/// How a session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

/// One broker session's channels, consumers and work in hand: made by `open`, driven by
/// `consume`, ended by `drain`.
struct Session {
    /// The close queue's consumer channel (its prefetch is `PREFETCH`).
    channel: Channel,
    /// For the queue-depth gauges: a failed passive declare must not close a channel in use.
    depth_channel: Channel,
    /// The node this session is connected to, for the logs.
    node: AmqpUrl,
    consumer_tag: String,
    /// `None` while a hold keeps the worker from consuming.
    consumer: Option<Consumer>,
    batcher: Batcher<Item, BatchKey>,
    /// What every send task of the session gets: the close queue's settler and the stop token.
    senders: SessionHandle,
    tracker: TaskTracker,
    hold: watch::Receiver<bool>,
    /// Cancelled if the verifier's consumer dies on its own.
    verifier_down: CancellationToken,
    /// Both connections' flow control and loss.
    flow: SessionFlow,
}

/// How long a connection or channel may take to close politely at a session's end; a blocked one
/// never does.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Worker {
    config: WorkerConfig,
    shared: Arc<Shared>,
}

impl Worker {
    pub(crate) fn new(
        config: WorkerConfig,
        linkedin: LinkedInClient,
        metrics: Arc<Metrics>,
    ) -> Self {
        let isolation = Arc::new(Isolation::new(
            config.batch_size,
            config.culprit_half_life,
            metrics.batch_target_size.clone(),
        ));
        let shared = Arc::new(Shared {
            linkedin,
            limiter: RateLimiter::with_daily_limit(
                config.rate_limit_per_minute,
                config.rate_limit_per_day,
                metrics.throttled_until.clone(),
            ),
            in_flight: Semaphore::new(config.max_in_flight),
            hold: Hold::new(metrics.clone()),
            metrics,
            retry: config.retry,
            recent: Arc::new(Recent::default()),
            isolation,
            already_closed: config.already_closed,
            task_checks: config.task_checks.clone(),
        });
        Worker { config, shared }
    }

    /// Runs until `shutdown` is cancelled (Ok) or the broker refuses the configuration (Err).
    pub(crate) async fn run(&self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        // Reconnecting has no budget: the broker is the only place work comes from.
        let policy = RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_elapsed: Duration::MAX,
        };
        let mut reconnect = policy.new_state();
        let mut attempt = 0u32;
        // Each connect tries the next node of AMQP_URL first, and counts as a reconnect after the
        // very first one.
        let connector = Connector::from_args(&self.config.amqp, &self.config.connection_name)
            .map_err(|error| WorkerError::Fatal(AmqpError::Config(Box::new(error))))?
            .count_reconnects(self.shared.metrics.reconnects.clone());
        // Stopped however `run` ends.
        let _polling = self.shared.linkedin.tokens.follows_a_file().then(|| {
            let stop = shutdown.child_token();
            tokio::spawn(follow_client_secret(self.shared.clone(), stop.clone()));
            stop.drop_guard()
        });
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            attempt += 1;
            // Reconnecting is not being wedged: /healthz stays green through a long broker outage.
            self.shared.metrics.beat();
            let outcome = self.session(&connector, &shutdown).await;
            self.shared.metrics.set_ready(false);
            // The blocked connections are gone with the session; the next one is blocked anew
            // when it first publishes during the alarm.
            self.shared.metrics.set_broker_blocked(None);
            let why = match outcome {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                Ok(SessionEnd::Lost(why)) => {
                    // It was up: start the backoff afresh.
                    attempt = 1;
                    reconnect = policy.new_state();
                    why
                }
                Err(error) if error.is_permanent() => return Err(WorkerError::Fatal(error)),
                Err(error) => error.to_string(),
            };
            // Waiting for the broker is not being wedged: keep /healthz green meanwhile.
            self.shared.metrics.beat();
            let delay = policy.on_wait(&mut reconnect, None);
            warn!(attempt, error = %why, delay_ms = delay.as_millis() as u64, "RabbitMQ unavailable; reconnecting.");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    async fn session(
        &self,
        connector: &Connector,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, AmqpError> {
        let consuming = connector.connect().await?;
        let publishing_name = publishing_connection_name(&self.config.connection_name);
        let publishing = match connector.connect_beside(&consuming, &publishing_name).await {
            Ok(publishing) => publishing,
            Err(error) => {
                close_or_sever(&consuming.connection, &consuming.severer, CLOSE_TIMEOUT).await;
                return Err(error);
            }
        };
        let flow = SessionFlow::new(
            &consuming.connection,
            &publishing.connection,
            &self.config.connection_name,
        );
        let result = match self
            .open(&consuming, &publishing.connection, flow, shutdown)
            .await
        {
            Ok(mut session) => {
                let end = self.consume(&mut session, shutdown).await;
                self.drain(session, &end).await;
                Ok(end)
            }
            Err(error) => Err(error),
        };
        // The publishing connection first: severed, it fails whatever still waits on it.
        for Connected {
            connection,
            severer,
            ..
        } in [&publishing, &consuming]
        {
            close_or_sever(connection, severer, CLOSE_TIMEOUT).await;
        }
        result
    }

    /// Declares the queues, opens the session's channels and starts its consumers: the verifier's
    /// first, so that nothing holds up the main loop once deliveries arrive, then the close queue's
    /// (unless a hold is on). Everything is on the consuming connection but the confirm channel.
    async fn open(
        &self,
        consuming: &Connected,
        publishing: &Connection,
        flow: SessionFlow,
        shutdown: &CancellationToken,
    ) -> Result<Session, AmqpError> {
        let connection = &consuming.connection;
        let node = consuming.node.clone();
        let config = &self.config;
        let amqp_args = &config.amqp;
        let close_queue = amqp::declare_queues(connection, amqp_args).await?;
        warn_if_replicas_share(amqp_args, close_queue.consumer_count());
        if let Some(schedule) = &config.task_checks {
            tasks::queues::declare(connection, amqp_args, schedule).await?;
        }
        if let Some(exchange) = config.outcomes.exchange() {
            outcome::declare_exchange(connection, exchange).await?;
        }
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await?;
        let settler = Arc::new(Settler::new(
            amqp::confirm_channel(publishing).await?,
            amqp_args.close_queue.clone(),
            amqp_args.dead_letter_queue.clone(),
            self.shared.metrics.clone(),
            config.outcomes.clone(),
        ));
        let depth_channel = connection.create_channel().await?;
        let senders = SessionHandle {
            settler: settler.clone(),
            stop: shutdown.child_token(),
        };
        let tracker = TaskTracker::new();
        // Watched before the first look at the hold, so that no change of it goes unseen.
        let hold = self.shared.hold.watch();
        // Never cancelled without a verifier.
        let verifier_down = match &config.task_checks {
            Some(schedule) => {
                let settler = settler.for_another_channel();
                Verifier::new(
                    self.shared.clone(),
                    schedule.clone(),
                    settler,
                    config.linger,
                )
                .start(connection, senders.stop.clone(), &tracker)
                .await?
            }
            None => CancellationToken::new(),
        };
        let mut session = Session {
            channel,
            depth_channel,
            node,
            consumer_tag: String::new(),
            consumer: None,
            batcher: Batcher::new(config.batch_size, config.linger),
            senders,
            tracker,
            hold,
            verifier_down,
            flow,
        };
        if !self.shared.hold.is_blocked() {
            self.start_consuming(&mut session).await?;
        }
        Ok(session)
    }

    /// The session's main loop: batch deliveries, send what is due, follow the hold, and watch
    /// the broker and the verifier, until shutdown or a lost session.
    async fn consume(&self, session: &mut Session, shutdown: &CancellationToken) -> SessionEnd {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = session.batcher.next_deadline();
            // A batch whose linger has run out goes when a request slot is free, not before: while
            // every slot is taken it keeps filling (a full batch goes at once, as always). Cut at
            // its linger instead, it would queue behind the busy slots at whatever size it had,
            // and after a burst of one-element requests (redeliveries after a failover) every
            // later batch would stay as small as the few acks that made room for it.
            let due_now = deadline.is_some_and(|deadline| deadline <= Instant::now());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                delivery = next_delivery(&mut session.consumer) => match delivery {
                    Some(Ok(delivery)) => {
                        // Batches are cut at the size the culprit estimate asks for now.
                        for full in session.batcher.resize(self.shared.isolation.fresh_size()) {
                            self.dispatch(full, session);
                        }
                        if let Some(full) = self.accept(delivery, session) {
                            self.dispatch(full, session);
                        }
                    }
                    Some(Err(error)) => return SessionEnd::Lost(error.to_string()),
                    None => return SessionEnd::Lost("the consumer was cancelled by the broker".into()),
                },
                changed = session.hold.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let blocked = *session.hold.borrow_and_update();
                    if let Err(error) = self.follow_hold(session, blocked).await {
                        return SessionEnd::Lost(error.to_string());
                    }
                },
                _ = session.verifier_down.cancelled() => {
                    return SessionEnd::Lost("the task-check consumer stopped".into());
                }
                change = session.flow.next() => {
                    if let Some(lost) = session.flow.report(change, &self.shared.metrics) {
                        return SessionEnd::Lost(lost);
                    }
                }
                _ = sleep_until_deadline(deadline), if !due_now => {}
                // The semaphore is fair: this waits behind every send already waiting for a slot.
                // A cold worker's window may hold fresh requests back too: the batch keeps filling
                // meanwhile rather than wait there at the size it had.
                _ = self.free_for_a_fresh_batch(), if due_now => {
                    for batch in session.batcher.take_due(Instant::now()) {
                        self.dispatch(batch, session);
                    }
                }
                _ = ticker.tick() => {
                    self.shared.metrics.beat();
                    self.observe_depths(&session.depth_channel).await;
                    // The broker closes a channel that publishes to an exchange that is gone
                    // (OUTCOME_EXCHANGE deleted): every settle would fail until a new session
                    // declares it again.
                    if !session.senders.settler.confirm_channel().status().connected() {
                        return SessionEnd::Lost("the publishing channel was closed by the broker".into());
                    }
                }
            }
        }
    }

    /// Until a fresh batch would be sent at once: the window has room for one, then a request slot
    /// is free.
    async fn free_for_a_fresh_batch(&self) {
        self.shared.isolation.until_room().await;
        drop(self.shared.in_flight.acquire().await);
    }

    /// Ends a session. On shutdown: stop consuming, send what is batched, wait (up to
    /// `SHUTDOWN_TIMEOUT_MS`) for the send tasks, close the channels. On a lost session: tell the
    /// tasks to give back what only waits; the broker redelivers the rest.
    async fn drain(&self, session: Session, end: &SessionEnd) {
        let Session {
            channel,
            depth_channel,
            consumer_tag,
            consumer,
            mut batcher,
            senders,
            tracker,
            ..
        } = session;
        let why = match end {
            SessionEnd::Lost(why) => why,
            SessionEnd::Shutdown => {
                self.shared.metrics.set_ready(false);
                info!("Shutting down: no new deliveries; sending what is batched.");
                if consumer.is_some()
                    && let Err(error) = channel
                        .basic_cancel(consumer_tag.as_str().into(), BasicCancelOptions::default())
                        .await
                {
                    debug!(%error, "Cancelling the consumer failed.");
                }
                for batch in batcher.take_all() {
                    self.dispatch_to(batch, &senders, &tracker);
                }
                tracker.close();
                let timeout = self.config.shutdown_timeout;
                if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
                    warn!(
                        timeout_ms = timeout.as_millis() as u64,
                        "Shutdown timeout: unfinished requests are abandoned; their messages return to the queue."
                    );
                }
                for open in [&channel, &depth_channel, senders.settler.confirm_channel()] {
                    // A blocked connection never sends the close: the session's end severs it.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, open.close(200, "shutdown".into()))
                        .await;
                }
                info!("Shut down cleanly.");
                return;
            }
        };
        error!(error = %why, "Lost the broker session; in-hand deliveries will be redelivered.");
        // Waiting tasks give their items back (harmlessly failing on a dead channel) and end.
        senders.stop.cancel();
        self.shared.recent.session_ended();
        tracker.close();
    }

    /// The hold closed: stop consuming and give back what is held; it opened: consume again.
    async fn follow_hold(&self, session: &mut Session, blocked: bool) -> Result<(), AmqpError> {
        if blocked && let Some(held) = session.consumer.take() {
            self.stop_consuming(session, held).await;
        } else if !blocked && session.consumer.is_none() {
            self.start_consuming(session).await?;
        }
        Ok(())
    }

    /// Consumes the close queue under a new consumer tag.
    async fn start_consuming(&self, session: &mut Session) -> Result<(), AmqpError> {
        let amqp_args = &self.config.amqp;
        let tag = format!("job-closer-{}", uuid::Uuid::new_v4());
        let consumer = session
            .channel
            .basic_consume(
                amqp::queue_name(&amqp_args.close_queue)?,
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        info!(
            node = %session.node,
            queue = %amqp_args.close_queue,
            prefetch = self.config.prefetch,
            batch_size = self.config.batch_size,
            "Consuming."
        );
        session.consumer_tag = tag;
        session.consumer = Some(consumer);
        self.shared.metrics.set_ready(true);
        Ok(())
    }

    /// The hold closed: take nothing new, and give back what is batched and what the broker had
    /// already pushed. Senders give back their own.
    async fn stop_consuming(&self, session: &mut Session, mut consumer: Consumer) {
        self.shared.metrics.set_ready(false);
        let cancelled = session
            .channel
            .basic_cancel(
                session.consumer_tag.as_str().into(),
                BasicCancelOptions::default(),
            )
            .await;
        let settler = &session.senders.settler;
        let mut given_back = 0usize;
        settler
            .together(async {
                for batch in session.batcher.take_all() {
                    for item in batch.items {
                        settler.give_back(&item.delivery).await;
                        given_back += 1;
                    }
                }
                if cancelled.is_ok() {
                    // After the cancel, the stream yields what was already pushed, then ends.
                    let drained = tokio::time::timeout(Duration::from_secs(10), async {
                        while let Some(Ok(delivery)) = consumer.next().await {
                            settler.give_back(&delivery).await;
                            given_back += 1;
                        }
                    })
                    .await;
                    if drained.is_err() {
                        warn!("The cancelled consumer did not end; what it holds returns when the session ends.");
                    }
                }
            })
            .await;
        if let Err(error) = cancelled {
            warn!(%error, "Cancelling the consumer for the hold failed.");
        }
        warn!(
            given_back,
            "Holding: stopped consuming and gave back what was held."
        );
    }

    /// Validates one delivery: invalid ones are dead-lettered at once, valid ones batched.
    fn accept(&self, delivery: Delivery, session: &mut Session) -> Option<Batch<Item, BatchKey>> {
        self.shared.metrics.consumed.inc();
        let span = spans::process(&self.config.amqp.close_queue, &delivery);
        let request = match close_request::validate(&delivery.data) {
            Ok(request) => request,
            Err(invalid) => {
                let settler = session.senders.settler.clone();
                let failure = Failure::invalid(invalid.to_string());
                session.tracker.spawn(
                    async move {
                        settler
                            .dead_letter(&delivery, &delivery.properties, None, failure)
                            .await
                    }
                    .instrument(span),
                );
                return None;
            }
        };
        spans::external_id(&span, &request.external_id);
        let external_id = IdKey::of(&request.external_id);
        let (in_hand, suspect) = self.shared.recent.hold(
            &request.external_id,
            delivery.redelivered,
            &session.senders.stop,
        );
        let key = BatchKey {
            contract: request.contract.clone(),
            suspect,
        };
        let item = Item {
            replayed: is_replayed(&delivery),
            delivery,
            request,
            _in_hand: in_hand,
            span,
        };
        session.batcher.push(item, external_id, key, Instant::now())
    }

    fn dispatch(&self, batch: Batch<Item, BatchKey>, session: &Session) {
        self.dispatch_to(batch, &session.senders, &session.tracker);
    }

    /// Hands a due batch to send tasks: one for the batch, or one per element for suspects.
    fn dispatch_to(
        &self,
        batch: Batch<Item, BatchKey>,
        senders: &SessionHandle,
        tracker: &TaskTracker,
    ) {
        if batch.key.suspect {
            // Likely re-closes: one request each, after any first delivery of the same id, so
            // that a 409 costs one element and an accepted original costs none.
            for item in batch.items {
                let group = Group {
                    items: vec![item],
                    retry: self.shared.retry.new_state(),
                    suspect: true,
                    lineage: Lineage::Fresh,
                };
                tracker.spawn(send::process(self.shared.clone(), senders.clone(), group));
            }
            return;
        }
        let group = Group {
            items: batch.items,
            retry: self.shared.retry.new_state(),
            suspect: false,
            lineage: Lineage::Fresh,
        };
        tracker.spawn(send::process(self.shared.clone(), senders.clone(), group));
    }

    async fn observe_depths(&self, channel: &Channel) {
        let task_queues = self
            .config
            .task_checks
            .as_ref()
            .map(|schedule| schedule.queue_names())
            .unwrap_or_default();
        for queue in [
            &self.config.amqp.close_queue,
            &self.config.amqp.dead_letter_queue,
        ]
        .into_iter()
        .chain(&task_queues)
        {
            // A queue that is missing (or a channel the broker closed) shows no depth this time.
            if let Ok(probed) = amqp::probe_queue_on(channel, queue).await {
                self.shared.metrics.queue_depth(queue, probed.ready);
            }
        }
    }
}

/// Reads `LINKEDIN_CLIENT_SECRET_FILE` again every few seconds: a rotated secret (rewritten, renamed
/// into place, or a Kubernetes Secret's `..data` swap) is picked up without a restart, and a hold for
/// refused credentials asks for a token at once with it.
async fn follow_client_secret(shared: Arc<Shared>, stop: CancellationToken) {
    let mut every = tokio::time::interval(crate::secret_file::POLL_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {
                shared.linkedin.tokens.reread_credentials().await;
            }
        }
    }
}

/// The next delivery, or never while not consuming.
async fn next_delivery(consumer: &mut Option<Consumer>) -> Option<lapin::Result<Delivery>> {
    match consumer {
        Some(consumer) => consumer.next().await,
        None => std::future::pending().await,
    }
}

/// Replicas that all consume (no single active consumer) each pace themselves: the rate limit and
/// the token are per process, so together they may exceed LinkedIn's limit.
fn warn_if_replicas_share(amqp_args: &AmqpArgs, other_consumers: u32) {
    if !amqp_args.single_active_consumer && other_consumers > 0 {
        warn!(
            queue = %amqp_args.close_queue,
            other_consumers,
            "Other consumers are on the close queue and SINGLE_ACTIVE_CONSUMER=false: each replica applies its own RATE_LIMIT_PER_MINUTE and its own LinkedIn token, so together they may send more than the limit. Divide RATE_LIMIT_PER_MINUTE among the replicas, or set SINGLE_ACTIVE_CONSUMER=true for hot standbys."
        );
    }
}

async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
