//! The wrapper sent to an instance around the payload's script, and the
//! decoding of what comes back.
//!
//! SSM returns at most 24,000 characters of standard output inline
//! (`GetCommandInvocation`), so the script travels gzip-compressed and
//! base64-encoded, and its output comes back the same way:
//!
//! ```text
//! DIFFY-SSM 1 <nonce> <exit code> <stdout bytes> <stderr bytes>
//! <base64 of gzip of the script's stdout>
//! <base64 of gzip of the script's stderr>
//! DIFFY-SSM END
//! ```
//!
//! Output cut anywhere (no end line, a short or undecodable block, sizes that
//! do not match) is detected and never parsed as if whole.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// Characters of standard output `GetCommandInvocation` returns inline.
pub const INLINE_STDOUT_LIMIT: usize = 24_000;

/// The shell command (one line per element of `commands`) that runs
/// `script_text` on the instance and returns its output encoded.
///
/// Carries no credential: only the payload's own text, compressed.
pub fn wrap(script_text: &str, nonce: &str, label: &str) -> Vec<String> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(script_text.as_bytes()).expect("writing to memory");
    let packed = STANDARD.encode(gz.finish().expect("writing to memory"));
    // `label` is for people reading the command in the console; keep it inert.
    let label: String =
        label.chars().map(|c| if c.is_ascii_alphanumeric() || " .,:_-".contains(c) { c } else { '_' }).collect();
    vec![
        format!("# diffy {label} (read-only queries; output returned gzip+base64)"),
        // The system's own tools first, not what an earlier PATH entry plants.
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH; export PATH".into(),
        "for _c in base64 gzip mktemp; do command -v $_c >/dev/null 2>&1 || { echo \"DIFFY-SSM FATAL $_c is missing\"; exit 1; }; done".into(),
        "_t=$(mktemp -d) || { echo 'DIFFY-SSM FATAL mktemp failed'; exit 1; }".into(),
        format!("printf '%s' '{packed}' | base64 -d | gzip -dc > \"$_t/s\" || {{ echo 'DIFFY-SSM FATAL could not unpack the payload'; rm -rf \"$_t\"; exit 1; }}"),
        "/bin/sh \"$_t/s\" > \"$_t/o\" 2> \"$_t/e\" </dev/null; _rc=$?".into(),
        format!("printf 'DIFFY-SSM 1 {nonce} %s %s %s\\n' \"$_rc\" \"$(wc -c < \"$_t/o\" | tr -d ' ')\" \"$(wc -c < \"$_t/e\" | tr -d ' ')\""),
        "gzip -c \"$_t/o\" | base64 | tr -d '\\n'; echo".into(),
        "gzip -c \"$_t/e\" | base64 | tr -d '\\n'; echo".into(),
        "echo 'DIFFY-SSM END'".into(),
        "rm -rf \"$_t\"".into(),
    ]
}

/// What an instance's returned output decoded to.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The whole output: the script's exit code, stdout and stderr.
    Whole {
        /// The script's exit code.
        code: i32,
        /// The script's standard output, byte for byte.
        stdout: Bytes,
        /// The script's standard error.
        stderr: Bytes,
    },
    /// The output decompresses past the byte limit: what fits is kept.
    OverLimit {
        /// The script's standard output, up to the limit.
        stdout: Bytes,
        /// The script's standard error, up to what the limit leaves.
        stderr: Bytes,
    },
    /// The wrapper itself failed on the host (a tool missing).
    Fatal(String),
    /// The output is cut or damaged; the reason says where.
    Damaged(String),
}

/// Decodes the text SSM returned as the invocation's standard output,
/// never decompressing more than `limit` bytes in all (a hostile host can
/// send a gzip bomb).
pub fn decode(text: &str, nonce: &str, limit: u64) -> Decoded {
    let mut lines = text.lines();
    let Some(header) = lines.find(|l| l.starts_with("DIFFY-SSM ")) else {
        return Decoded::Damaged("no DIFFY-SSM header in the output".into());
    };
    if let Some(why) = header.strip_prefix("DIFFY-SSM FATAL ") {
        return Decoded::Fatal(why.to_string());
    }
    let fields: Vec<&str> = header.split(' ').collect();
    let [_, "1", n, code, olen, elen] = fields.as_slice() else {
        return Decoded::Damaged(format!("unreadable header {header:?}"));
    };
    if *n != nonce {
        return Decoded::Damaged(format!("the header belongs to another run ({n})"));
    }
    let (Ok(code), Ok(olen), Ok(elen)) = (code.parse::<i32>(), olen.parse::<usize>(), elen.parse::<usize>()) else {
        return Decoded::Damaged(format!("unreadable header {header:?}"));
    };
    let (Some(o), Some(e), Some(end)) = (lines.next(), lines.next(), lines.next()) else {
        return Decoded::Damaged(format!(
            "the output ends early ({} characters): SSM cut it or the host stopped",
            text.len()
        ));
    };
    if end != "DIFFY-SSM END" {
        return Decoded::Damaged(format!("the output ends early ({} characters): no end line", text.len()));
    }
    let (stdout, cut_out) = match unpack(o, olen, limit) {
        Ok(b) => b,
        Err(why) => return Decoded::Damaged(format!("stdout block: {why}")),
    };
    let (stderr, cut_err) = match unpack(e, elen, limit - stdout.len() as u64) {
        Ok(b) => b,
        Err(why) => return Decoded::Damaged(format!("stderr block: {why}")),
    };
    if cut_out || cut_err {
        return Decoded::OverLimit { stdout, stderr };
    }
    Decoded::Whole { code, stdout, stderr }
}

/// Decodes one block, keeping at most `limit` bytes; `true` when it was cut there.
fn unpack(block: &str, len: usize, limit: u64) -> Result<(Bytes, bool), String> {
    let gz = STANDARD.decode(block.trim()).map_err(|e| format!("not base64 ({e})"))?;
    let mut out = Vec::with_capacity(len.min(limit as usize));
    GzDecoder::new(gz.as_slice())
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("not whole gzip ({e})"))?;
    if out.len() as u64 > limit {
        out.truncate(limit as usize);
        return Ok((Bytes::from(out), true));
    }
    if out.len() != len {
        return Err(format!("{} bytes where the host counted {len}", out.len()));
    }
    Ok((Bytes::from(out), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(commands: &[String]) -> String {
        let out = std::process::Command::new("sh").arg("-c").arg(commands.join("\n")).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn a_script_round_trips_byte_for_byte() {
        let script = "printf 'caf\\351\\000x\\n'; echo err >&2; exit 3\n";
        let text = run(&wrap(script, "n0nce", "test"));
        match decode(&text, "n0nce", u64::MAX) {
            Decoded::Whole { code, stdout, stderr } => {
                assert_eq!(code, 3);
                assert_eq!(&stdout[..], b"caf\xe9\x00x\n");
                assert_eq!(&stderr[..], b"err\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cut_output_is_damaged_never_whole() {
        let script = "head -c 200000 /dev/urandom | od -An -tx1\n";
        let text = run(&wrap(script, "abc", "test"));
        assert!(matches!(decode(&text, "abc", u64::MAX), Decoded::Whole { .. }));
        for cut in [10, 100, text.len() / 2, text.len() - 20] {
            let d = decode(&text[..cut], "abc", u64::MAX);
            assert!(matches!(d, Decoded::Damaged(_)), "cut at {cut}: {d:?}");
        }
        assert!(matches!(decode(&text, "other", u64::MAX), Decoded::Damaged(_)));
        assert!(matches!(decode("garbage\n", "abc", u64::MAX), Decoded::Damaged(_)));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let text = run(&wrap("head -c 50000000 /dev/zero\n", "z", "test"));
        assert!(text.len() < 100_000, "50 MB of zeros compress to {} characters", text.len());
        match decode(&text, "z", 1 << 20) {
            Decoded::OverLimit { stdout, stderr } => {
                assert_eq!(stdout.len(), 1 << 20);
                assert!(stderr.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn label_cannot_break_out_of_the_comment() {
        let cmds = wrap("true\n", "n", "x'; rm -rf / #\n$(id)");
        assert!(!cmds[0].contains('\'') && !cmds[0].contains('$') && !cmds[0].contains('\n'), "{}", cmds[0]);
    }
}
