//! RabbitMQ nodes of a test's own, next to the shared broker: a three-node cluster for failover
//! tests, a TLS node for certificate tests. Each node has its own name (`{prefix}-c1@localhost`, a
//! prefix unique per run), ports, config, data and log directories, and no plugins, so nothing
//! collides with the main broker on 5672/15672/25672. They run as the `rabbitmq` user with
//! `HOME=/var/lib/rabbitmq`, sharing the main broker's Erlang cookie so `rabbitmqctl` reaches them.
//!
//! Dropping [`RabbitNodes`] stops every node (`rabbitmqctl stop`, then SIGKILL of whatever beam is
//! left) and removes their directories. A node that does not start fails the test with the tail of
//! its log — never a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// One node: its name, ports and directory.
pub struct Node {
    pub name: String,
    pub amqp_port: u16,
    pub tls_port: Option<u16>,
    pub dist_port: u16,
    pub dir: PathBuf,
}

impl Node {
    /// `amqp://guest:guest@127.0.0.1:{port}/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    fn log_tail(&self) -> String {
        let log = self.dir.join("log").join(format!("{}.log", self.name));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Nodes this test started; dropped, they are stopped and removed.
pub struct RabbitNodes {
    pub nodes: Vec<Node>,
    base: PathBuf,
}

/// A port nobody listens on now (the kernel's pick, released at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn as_rabbitmq(program: &str) -> Command {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .and_then(|line| line.split_whitespace().nth(1).map(|uid| uid == "0"))
        .unwrap_or(false);
    let mut command = if is_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "rabbitmq", "--", program]);
        command
    } else {
        Command::new(program)
    };
    command.env("HOME", "/var/lib/rabbitmq");
    command
}

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

impl RabbitNodes {
    /// Starts `count` nodes named `{prefix}-c1@localhost`…; `extra_config(i)` is appended to node
    /// i's rabbitmq.conf (TLS listeners). Waits until all are up.
    pub fn start(count: usize, extra_config: impl Fn(usize, &Path) -> String) -> RabbitNodes {
        for path in [SERVER, CTL] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install rabbitmq-server (.ci/run does) to run the cluster and TLS tests"
            );
        }
        let prefix = format!("jc{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let base = std::env::temp_dir().join(format!("job-closer-nodes-{prefix}"));
        std::fs::create_dir_all(&base).unwrap();
        let mut nodes = Vec::new();
        for i in 1..=count {
            let dir = base.join(format!("c{i}"));
            std::fs::create_dir_all(dir.join("mnesia")).unwrap();
            std::fs::create_dir_all(dir.join("log")).unwrap();
            nodes.push(Node {
                name: format!("{prefix}-c{i}@localhost"),
                amqp_port: free_port(),
                tls_port: None,
                dist_port: free_port(),
                dir,
            });
        }
        let mut started = RabbitNodes { nodes, base };
        for i in 0..count {
            let extra = extra_config(i, &started.nodes[i].dir);
            if extra.contains("listeners.ssl") {
                started.nodes[i].tls_port = extra
                    .lines()
                    .find_map(|line| line.strip_prefix("listeners.ssl.default = "))
                    .and_then(|port| port.trim().parse().ok());
            }
            let node = &started.nodes[i];
            std::fs::write(
                node.dir.join("rabbitmq.conf"),
                format!(
                    "listeners.tcp.1 = 127.0.0.1:{}\nloopback_users = none\n{extra}\n",
                    node.amqp_port
                ),
            )
            .unwrap();
            std::fs::write(node.dir.join("enabled_plugins"), "[].\n").unwrap();
            std::fs::write(node.dir.join("rabbitmq-env.conf"), "").unwrap();
        }
        let chown = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&started.base)
            .output();
        if let Ok(output) = &chown {
            assert!(
                output.status.success() || !output.stderr.is_empty(),
                "chown failed"
            );
        }
        for node in &started.nodes {
            let output = as_rabbitmq(SERVER)
                .arg("-detached")
                .env("RABBITMQ_NODENAME", &node.name)
                .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_NODE_PORT", node.amqp_port.to_string())
                .env("RABBITMQ_DIST_PORT", node.dist_port.to_string())
                .env("RABBITMQ_CONFIG_FILE", node.dir.join("rabbitmq.conf"))
                .env("RABBITMQ_MNESIA_BASE", node.dir.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", node.dir.join("log"))
                .env(
                    "RABBITMQ_ENABLED_PLUGINS_FILE",
                    node.dir.join("enabled_plugins"),
                )
                .env("RABBITMQ_CONF_ENV_FILE", node.dir.join("rabbitmq-env.conf"))
                .env("RABBITMQ_PID_FILE", node.dir.join("pid"))
                .env("ERL_EPMD_ADDRESS", "127.0.0.1")
                .output()
                .expect("rabbitmq-server runs");
            assert!(
                output.status.success(),
                "cannot start RabbitMQ node {}: {}{}",
                node.name,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        for i in 0..count {
            started.await_startup(i);
        }
        started
    }

    /// Starts three nodes and joins the second and third to the first.
    pub fn cluster(count: usize) -> RabbitNodes {
        let nodes = RabbitNodes::start(count, |_, _| String::new());
        let first = nodes.nodes[0].name.clone();
        for i in 1..count {
            nodes.ctl_ok(i, &["stop_app"]);
            nodes.ctl_ok(i, &["reset"]);
            nodes.ctl_ok(i, &["join_cluster", &first]);
            nodes.ctl_ok(i, &["start_app"]);
        }
        for i in 0..count {
            nodes.await_startup(i);
        }
        let status = nodes.ctl_ok(0, &["cluster_status"]);
        for node in &nodes.nodes {
            assert!(
                status.contains(&node.name),
                "{} did not join the cluster:\n{status}",
                node.name
            );
        }
        nodes
    }

    /// Waits (up to 120 s) until node `i` has booted, or fails with its log.
    pub fn await_startup(&self, i: usize) {
        let node = &self.nodes[i];
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let output = self.ctl(i, &["await_startup", "--timeout", "10"]);
            if output.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "RabbitMQ node {} did not start within 120 s: {}\nlast log lines:\n{}",
                    node.name,
                    String::from_utf8_lossy(&output.stderr),
                    node.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        as_rabbitmq(CTL)
            .args(["-q", "-n", &self.nodes[i].name])
            .args(args)
            .output()
            .expect("rabbitmqctl runs")
    }

    /// Runs rabbitmqctl on node `i` and returns its output; fails the test if it fails.
    pub fn ctl_ok(&self, i: usize, args: &[&str]) -> String {
        let output = self.ctl(i, args);
        assert!(
            output.status.success(),
            "rabbitmqctl -n {} {args:?} failed: {}{}",
            self.nodes[i].name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Names of the client connections node `i` holds (empty when it is down).
    pub fn connection_names(&self, i: usize) -> Vec<String> {
        let output = self.ctl(i, &["list_connections", "name", "--no-table-headers"]);
        if !output.status.success() {
            return Vec::new();
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.trim().to_owned())
            .filter(|line| !line.is_empty())
            .collect()
    }

    /// `list_connections port client_properties` as node `i` answers it: the server port each
    /// connection came in on, then its client properties. The list is cluster-wide, whichever node
    /// answers, so the port (each node listens on its own) is what tells the nodes apart.
    fn connections_by_port(&self, i: usize) -> Vec<(u16, String)> {
        let output = self.ctl(
            i,
            &[
                "list_connections",
                "port",
                "client_properties",
                "--no-table-headers",
            ],
        );
        if !output.status.success() {
            return Vec::new();
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let (port, properties) = line.trim().split_once(char::is_whitespace)?;
                Some((port.parse().ok()?, properties.to_owned()))
            })
            .collect()
    }

    /// Which nodes hold a connection whose client properties mention `name`.
    pub fn nodes_with_connection(&self, name: &str) -> Vec<usize> {
        let connections = (0..self.nodes.len())
            .map(|i| self.connections_by_port(i))
            .find(|connections| !connections.is_empty())
            .unwrap_or_default();
        (0..self.nodes.len())
            .filter(|&i| {
                connections.iter().any(|(port, properties)| {
                    *port == self.nodes[i].amqp_port && properties.contains(name)
                })
            })
            .collect()
    }

    /// `rabbitmqctl stop_app`: the node stays up as an Erlang node, RabbitMQ stops on it.
    pub fn stop_app(&self, i: usize) {
        self.ctl_ok(i, &["stop_app"]);
    }

    pub fn start_app(&self, i: usize) {
        self.ctl_ok(i, &["start_app"]);
        self.await_startup(i);
    }

    /// SIGKILL of the node's beam process: no goodbye to clients or peers.
    pub fn kill(&self, i: usize) {
        let pid = self.nodes[i]
            .pid()
            .unwrap_or_else(|| panic!("no pid file for {}", self.nodes[i].name));
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

impl Drop for RabbitNodes {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = as_rabbitmq(CTL)
                .args(["-q", "-n", &self.nodes[i].name, "stop"])
                .output();
            if let Some(pid) = self.nodes[i].pid() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
