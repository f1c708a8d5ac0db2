//! A `redis-server` of the test's own, for the shared-state tests.
//!
//! It runs on an ephemeral port of 127.0.0.1 with a password and no
//! persistence (a restart forgets everything). It needs Debian's
//! `redis-server` on the PATH (`apt-get install -y redis-server`; `.ci/run`
//! installs it). Without it the tests fail: they never pass by skipping.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PATIENCE;

/// The password every test server requires (`--requirepass`). Tests check
/// that it never reaches a log line.
pub const REDIS_PASSWORD: &str = "test-redis-password-5e4f3a";

/// How many free ports [`RedisServer::start`] tries: a port can be taken
/// between the moment it is found free and the moment redis binds it.
const ATTEMPTS: usize = 5;

/// A running `redis-server`, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers `PING`.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts one on a free port with `extra` arguments (TLS, say).
    pub async fn start_with(extra: &[&str]) -> Self {
        for _ in 0..ATTEMPTS {
            if let Some(server) = Self::start_on(free_port(), extra).await {
                return server;
            }
        }
        panic!("redis-server did not start on any of {ATTEMPTS} free ports");
    }

    /// Starts one on `port` (again, after [`Self::kill`]); `None` if it
    /// exited (the port was taken) or did not answer in time.
    pub async fn start_on(port: u16, extra: &[&str]) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(extra)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--requirepass", REDIS_PASSWORD])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run redis-server ({err}): these tests need it, install it with `apt-get install -y redis-server`"
                )
            });
        let mut server = Self {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(child) = server.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                server.child = None;
                return None;
            }
            if server.ping().await {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Whether it answers an authenticated `PING`.
    pub async fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let command = format!("AUTH {REDIS_PASSWORD}\r\nPING\r\n");
        if stream.write_all(command.as_bytes()).await.is_err() {
            return false;
        }
        let mut reply = Vec::new();
        let mut buffer = [0u8; 64];
        while !String::from_utf8_lossy(&reply).contains("+PONG") {
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
                Ok(Ok(n)) if n > 0 => reply.extend_from_slice(&buffer[..n]),
                _ => return false,
            }
        }
        true
    }

    /// The URL the gateways are given, password included.
    pub fn url(&self) -> String {
        format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}/0", self.port)
    }

    /// One command, authenticated; the first line of its answer.
    pub async fn command(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to the test's redis-server");
        let mut command = format!(
            "*2\r\n$4\r\nAUTH\r\n${}\r\n{REDIS_PASSWORD}\r\n*{}\r\n",
            REDIS_PASSWORD.len(),
            args.len()
        );
        for arg in args {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream
            .write_all(command.as_bytes())
            .await
            .expect("write to redis-server");
        let mut reply = Vec::new();
        let mut buffer = [0u8; 256];
        // "+OK" for AUTH, then the command's answer.
        while reply.iter().filter(|b| **b == b'\n').count() < 2 {
            let n = tokio::time::timeout(PATIENCE, stream.read(&mut buffer))
                .await
                .expect("redis-server answers in time")
                .expect("read from redis-server");
            assert!(n > 0, "redis closed the connection");
            reply.extend_from_slice(&buffer[..n]);
        }
        let text = String::from_utf8_lossy(&reply).into_owned();
        text.lines().nth(1).unwrap_or_default().to_owned()
    }

    /// Kills it (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on right now, for a redis-server to take (bound,
/// read, released: [`RedisServer::start_with`] tries another if it lost it).
pub fn free_port() -> u16 {
    super::free_addr().port()
}
