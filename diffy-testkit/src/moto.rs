//! A moto server (PyPI `moto[server]`), a local AWS endpoint for contract
//! tests: Auto Scaling, EC2, S3, STS and SSM's `SendCommand`.
//!
//! [`Moto::start`] runs `moto_server` on a free loopback port and stops it
//! (by its own PID) when dropped. The program is `$DIFFY_MOTO_SERVER`, else
//! `moto_server` on `PATH`; `.ci/run` installs it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server; stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

fn program() -> Option<String> {
    if let Ok(p) = std::env::var("DIFFY_MOTO_SERVER") {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("moto_server")).find(|p| p.is_file()).map(|p| p.display().to_string())
}

fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/data.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && buf.starts_with(b"HTTP/1.") && &buf[9..12] == b"200")
}

impl Moto {
    /// Starts a server. `Err` says why it cannot (moto not installed, or it
    /// did not come up).
    pub fn start() -> Result<Self, String> {
        let prog =
            program().ok_or("moto_server is not installed (pip install 'moto[server]'), or set DIFFY_MOTO_SERVER")?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
            let log = std::env::temp_dir().join(format!("diffy-moto-{port}.log"));
            let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new(&prog)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start {prog}: {e}"))?;
            let mut m = Moto { child, port, log };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = m.child.try_wait() {
                    break;
                }
                if ready(port) {
                    return Ok(m);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            last = format!(
                "moto_server on port {port} did not come up: {}",
                std::fs::read_to_string(&m.log).unwrap_or_default().lines().last().unwrap_or("")
            );
            m.stop();
        }
        Err(last)
    }

    /// Starts a server, or says why not and returns `None` (the caller's test
    /// then skips). Under CI (`CI` set) a missing moto fails the test instead:
    /// CI must run the contract tests.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        match Self::start() {
            Ok(m) => Some(m),
            Err(why) if std::env::var_os("CI").is_some() => panic!("{test}: {why}"),
            Err(why) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("skipping {test}: {why}");
                }
                None
            }
        }
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SDK configuration for this endpoint: region `us-east-1`, test
    /// credentials, no retries worth waiting for.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        self.sdk_config_with("AKIDMOTOTEST", "secret")
    }

    /// Like [`Moto::sdk_config`] with these credentials (moto maps an
    /// assumed role's keys to that role's account).
    pub fn sdk_config_with(&self, key: &str, secret: &str) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(self.url())
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new(key, secret, None, None, "moto"),
            ))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
            .build()
    }

    /// Creates an S3 bucket (moto does not check signatures).
    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        let req =
            format!("PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
            Ok(())
        } else {
            Err(format!("creating bucket {bucket}: {}", resp.lines().next().unwrap_or("no answer")))
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
