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
                () = &mut drain, if exited.is_some() => {
                    // What the pipes already hold is kept: on a busy runtime
                    // this branch can be chosen at the same poll as the read
                    // of a child's last output, and a host whose output was
                    // dropped would look as if its payload never started.
                    // Unconstrained: a spent cooperative budget must not make
                    // ready data look pending.
                    use futures::FutureExt;
                    if !out_done {
                        let _ = tokio::task::unconstrained(&mut out_fut).now_or_never();
                    }
                    if !err_done {
                        let _ = tokio::task::unconstrained(&mut err_fut).now_or_never();
                    }
                    break Driven::Exited(exited.take().expect("set with the drain"));
                }
                () = &mut deadline => break Driven::TimedOut,
                () = cancel.cancelled() => break Driven::Cancelled,
            }
        }
    };
    (out, err, end)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::time::Instant;

    use super::*;

    /// A pipe whose last bytes reach the reader at `ready_at`, without a
    /// wake-up of their own (the reactor is behind on a busy runtime); then
    /// it ends.
    struct Late {
        ready_at: Instant,
        data: Option<&'static [u8]>,
    }

    impl AsyncRead for Late {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if Instant::now() < self.ready_at {
                return Poll::Pending;
            }
            if let Some(d) = self.data.take() {
                buf.put_slice(d);
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn output_already_there_when_the_drain_ends_is_kept() {
        // The child has exited; its output is there at 1 s, but the runtime
        // only comes back at 3 s, past the two-second drain: the drain and
        // the ready read meet at one poll, and either may be chosen. Before,
        // the drain could win and the output was dropped: the host looked as
        // if its payload never started (2 of 2,000 fleet hosts under full
        // load: "the payload script did not start (exit 0)").
        for _ in 0..64 {
            let start = Instant::now();
            let mut out = Late { ready_at: start + Duration::from_secs(1), data: Some(b"==DIFFY:n:BEGIN 1 h==\n") };
            let mut err = Late { ready_at: start + Duration::from_secs(1), data: None };
            let cancel = CancellationToken::new();
            // Another task holds the runtime while the clock passes 3 s; the
            // timers (the drain's) fire before this task runs again.
            let busy = tokio::spawn(tokio::time::advance(Duration::from_secs(3)));
            let (o, _, end) = drive(&mut out, &mut err, async { 0 }, Duration::from_secs(60), 1 << 20, &cancel).await;
            busy.await.unwrap();
            assert!(matches!(end, Driven::Exited(0)), "{end:?}");
            assert_eq!(o.bytes, b"==DIFFY:n:BEGIN 1 h==\n", "the child's output is kept");
        }
    }
}
