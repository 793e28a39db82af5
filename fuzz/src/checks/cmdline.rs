//! The kernel command line (`/proc/cmdline`) as `upd` reads it to find the booted slot:
//! `slot::cmdline_words` (systemd's splitting and unquoting) and `slot::usr_device`.

use upd::host::slot::{cmdline_words, usr_device, UsrDevice};

/// `word` quoted so that systemd's splitting gives it back whole, if a quote character can.
fn quote(word: &str) -> Option<String> {
    if !word.contains('"') {
        Some(format!("\"{word}\""))
    } else if !word.contains('\'') {
        Some(format!("'{word}'"))
    } else {
        None
    }
}

/// The command line's words each quoted and joined by spaces: the same words (the check is
/// skipped for a word holding both quote characters, which no single quoting can carry).
fn words_round_trip(words: &[String]) {
    let Some(quoted) = words.iter().map(|w| quote(w)).collect::<Option<Vec<_>>>() else {
        return;
    };
    let line = quoted.join(" ");
    assert_eq!(cmdline_words(&line), words, "re-quoted as {line:?}");
}

pub fn cmdline(data: &[u8]) {
    let Some(text) = super::text(data) else {
        return;
    };
    let words = cmdline_words(text);
    for w in &words {
        // A word outside quotes never holds whitespace; one inside quotes may, but then the
        // input had a quote character.
        assert!(
            !w.contains([' ', '\t', '\n', '\r']) || text.contains(['"', '\'']),
            "{w:?} from {text:?}"
        );
    }
    words_round_trip(&words);
    let Some(dev) = usr_device(text) else {
        return;
    };
    let (key, value) = match &dev {
        UsrDevice::Uuid(u) => {
            assert_eq!(*u, u.to_ascii_lowercase(), "a PARTUUID is lower case");
            ("PARTUUID=", u)
        }
        UsrDevice::Label(l) => ("PARTLABEL=", l),
    };
    // The device found, written as one mount.usr= word, is found again.
    if let Some(word) = quote(&format!("mount.usr={key}{value}")) {
        assert_eq!(usr_device(&word).as_ref(), Some(&dev), "from {word:?}");
    }
    // An earlier usr= never changes it: mount.usr= wins over usr=, and the last one counts.
    let before = format!("usr=PARTLABEL=elsewhere {text}");
    assert_eq!(usr_device(&before).as_ref(), Some(&dev), "from {before:?}");
}
