//! Reading a child's output with a byte limit, for transports built on
//! processes (local shell, OpenSSH).

use tokio::io::{AsyncRead, AsyncReadExt};

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
