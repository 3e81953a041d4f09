//! Replays every committed fuzz corpus entry (`fuzz/corpus/TARGET/*`) through
//! its target on stable, so a crash a fuzzer once found stays fixed.

use std::path::Path;

#[test]
#[allow(clippy::print_stdout)] // how many entries ran is worth seeing in the log
fn every_corpus_entry_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, target) in diffy_fuzz::TARGETS {
        let dir = root.join(name);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target has a committed corpus)", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        assert!(!entries.is_empty(), "{name}: the corpus is empty");
        for p in &entries {
            let data = std::fs::read(p).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                panic!("{name}: {} makes the target panic", p.display());
            }
        }
        println!("{name}: {} entries replayed", entries.len());
    }
}
