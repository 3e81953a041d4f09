//! Driving a child process's output with a byte limit, a deadline and
//! cancellation, for transports built on processes (local shell, OpenSSH).

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// Output read so far from one stream.
#[derive(Debug, Default)]
pub struct Capture {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Whether the stream reached its end.
    pub eof: bool,
}

/// Reads `reader` to its end into `capture`, stopping once `limit` bytes have
/// been kept. Returns `true` when the limit stopped it.
pub async fn read_limited<R: AsyncRead + Unpin>(reader: &mut R, capture: &mut Capture, limit: u64) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if capture.bytes.len() as u64 >= limit {
            return true;
        }
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => {
                capture.eof = true;
                return false;
            }
            Ok(n) => {
                let room = (limit - capture.bytes.len() as u64).min(n as u64) as usize;
                capture.bytes.extend_from_slice(&buf[..room]);
                if room < n {
                    return true;
                }
            }
        }
    }
}

/// How [`drive`] ended.
#[derive(Debug)]
pub enum Driven<T> {
    /// The process ended (with what its wait returned) and its output was read.
    Exited(T),
    /// The deadline passed first.
    TimedOut,
    /// The run was cancelled first.
    Cancelled,
    /// The output passed the limit (of this many bytes).
    OutputLimit(u64),
}

/// Reads both streams while waiting for the process, until it has exited and
/// both streams are closed, or the deadline passes, or `cancel` fires, or the
/// output reaches `limit` bytes. Once the process has exited, streams still
/// held open (by processes it left behind) are given two seconds.
///
/// The caller stops the process when the result is not [`Driven::Exited`].
pub async fn drive<O, E, W, T>(
    stdout: &mut O,
    stderr: &mut E,
    wait: W,
    deadline: Duration,
    limit: u64,
    cancel: &CancellationToken,
) -> (Capture, Capture, Driven<T>)
where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
    W: Future<Output = T>,
{
    let (mut out, mut err) = (Capture::default(), Capture::default());
    let end = {
        let mut out_fut = Box::pin(read_limited(stdout, &mut out, limit));
        let mut err_fut = Box::pin(read_limited(stderr, &mut err, limit));
        let mut wait = Box::pin(wait);
        let deadline = tokio::time::sleep(deadline);
        tokio::pin!(deadline);
        let drain = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(drain);
        let (mut out_done, mut err_done, mut exited) = (false, false, None);
        loop {
            if out_done && err_done && exited.is_some() {
                break Driven::Exited(exited.take().expect("checked above"));
            }
            tokio::select! {
                limited = &mut out_fut, if !out_done => {
                    out_done = true;
                    if limited { break Driven::OutputLimit(limit); }
                }
                limited = &mut err_fut, if !err_done => {
                    err_done = true;
                    if limited { break Driven::OutputLimit(limit); }
                }
                status = &mut wait, if exited.is_none() => {
                    exited = Some(status);
                    drain.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(2));
                }
                () = &mut drain, if exited.is_some() => break Driven::Exited(exited.take().expect("set with the drain")),
                () = &mut deadline => break Driven::TimedOut,
                () = cancel.cancelled() => break Driven::Cancelled,
            }
        }
    };
    (out, err, end)
}
