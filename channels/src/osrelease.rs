//! A parser for os-release and extension-release files (systemd format).

use thiserror::Error;

/// Why an os-release or extension-release text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReleaseError {
    /// A line assigns to a name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("line {line}: invalid key {key:?} (expected [A-Za-z_][A-Za-z0-9_]*)")]
    InvalidKey {
        /// 1-based line number on which the key starts.
        line: usize,
        /// The key as written, trailing whitespace removed.
        key: String,
    },
    /// The file has no `ID=` (or an empty one), which systemd-sysext requires of a host.
    #[error("os-release has no ID= field (or it is empty)")]
    MissingId,
}

/// The fields of an os-release(5) file, in file order; a repeated key keeps its first
/// position and its last value, as systemd's `load_env_file_pairs()` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    fields: Vec<(String, String)>,
}

/// States of the parser, named after those of systemd's `parse_env_file_internal()`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    SingleQuote,
    DoubleQuote,
    DoubleQuoteEscape,
    Comment,
    CommentEscape,
}

/// Characters that a backslash escapes inside double quotes (systemd's SHELL_NEED_ESCAPE).
const SHELL_NEED_ESCAPE: &[char] = &['"', '\\', '`', '$'];

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_nl(c: char) -> bool {
    matches!(c, '\n' | '\r')
}

/// True when `key` is a valid environment-style name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Accumulates one assignment while the state machine runs.
#[derive(Default)]
struct Pending {
    /// 1-based line on which the key starts.
    line: usize,
    key: String,
    value: String,
    /// Length of `value` before its run of trailing unquoted whitespace, if any.
    value_ws: Option<usize>,
}

impl Pending {
    fn push_value(&mut self, c: char, track_ws: bool) {
        if track_ws && is_ws(c) {
            self.value_ws.get_or_insert(self.value.len());
        } else {
            self.value_ws = None;
        }
        self.value.push(c);
    }
}

impl OsRelease {
    /// Parses os-release text with the quoting, escaping and whitespace rules of systemd's
    /// `parse_env_file()`: lines without `=` are ignored as systemd ignores them, but a key
    /// that is not a valid name is an error naming its line.
    pub fn parse(text: &str) -> Result<OsRelease, ReleaseError> {
        let mut out = OsRelease::default();
        let mut state = State::PreKey;
        let mut cur = Pending::default();
        let mut line = 1usize;
        for c in text.chars() {
            state = match state {
                State::PreKey if c == '#' || c == ';' => State::Comment,
                State::PreKey if is_ws(c) => State::PreKey,
                State::PreKey => {
                    cur = Pending {
                        line,
                        ..Pending::default()
                    };
                    cur.key.push(c);
                    State::Key
                }
                State::Key if is_nl(c) => State::PreKey, // no '=': ignored, as systemd does
                State::Key if c == '=' => State::PreValue,
                State::Key => {
                    cur.key.push(c);
                    State::Key
                }
                State::PreValue | State::Value if is_nl(c) => {
                    out.push(std::mem::take(&mut cur))?;
                    State::PreKey
                }
                State::PreValue if c == '\'' => State::SingleQuote,
                State::PreValue if c == '"' => State::DoubleQuote,
                State::PreValue | State::Value if c == '\\' => State::ValueEscape,
                State::PreValue if is_ws(c) => State::PreValue,
                State::PreValue | State::Value => {
                    cur.push_value(c, true);
                    State::Value
                }
                State::ValueEscape => {
                    // An escaped newline is a continuation line and disappears entirely.
                    if !is_nl(c) {
                        cur.push_value(c, false);
                    }
                    State::Value
                }
                State::SingleQuote if c == '\'' => State::PreValue,
                State::DoubleQuote if c == '"' => State::PreValue,
                State::DoubleQuote if c == '\\' => State::DoubleQuoteEscape,
                State::SingleQuote | State::DoubleQuote => {
                    cur.push_value(c, false);
                    state
                }
                State::DoubleQuoteEscape => {
                    if SHELL_NEED_ESCAPE.contains(&c) {
                        cur.push_value(c, false);
                    } else if c != '\n' {
                        // Like the shell, keep the backslash before any other character.
                        cur.push_value('\\', false);
                        cur.push_value(c, false);
                    }
                    State::DoubleQuote
                }
                State::Comment if c == '\\' => State::CommentEscape,
                State::Comment if is_nl(c) => State::PreKey,
                State::Comment => State::Comment,
                // systemd 252: a backslash-escaped newline continues the comment.
                State::CommentEscape => State::Comment,
            };
            if c == '\n' {
                line += 1;
            }
        }
        if !matches!(
            state,
            State::PreKey | State::Key | State::Comment | State::CommentEscape
        ) {
            if state != State::Value {
                cur.value_ws = None;
            }
            out.push(cur)?;
        }
        Ok(out)
    }

    /// Records one finished assignment, trimming trailing whitespace as systemd does.
    fn push(&mut self, mut p: Pending) -> Result<(), ReleaseError> {
        let key = p.key.trim_end_matches([' ', '\t', '\n', '\r']).to_string();
        if !is_valid_key(&key) {
            return Err(ReleaseError::InvalidKey { line: p.line, key });
        }
        if let Some(len) = p.value_ws {
            p.value.truncate(len);
        }
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = p.value,
            None => self.fields.push((key, p.value)),
        }
        Ok(())
    }

    /// The value of `key`, if the file sets it (possibly to the empty string).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` unless it is absent or empty (systemd's `isempty()` treats both alike).
    pub fn get_nonempty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// All fields in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when the file sets no field at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// `ID=`: the operating system identifier.
    pub fn id(&self) -> Option<&str> {
        self.get("ID")
    }

    /// `VERSION_ID=`: the operating system version.
    pub fn version_id(&self) -> Option<&str> {
        self.get("VERSION_ID")
    }

    /// `SYSEXT_LEVEL=`: the extension API level, which takes precedence over VERSION_ID.
    pub fn sysext_level(&self) -> Option<&str> {
        self.get("SYSEXT_LEVEL")
    }

    /// `ARCHITECTURE=`: the systemd architecture name an extension is built for.
    pub fn architecture(&self) -> Option<&str> {
        self.get("ARCHITECTURE")
    }

    /// `SYSEXT_SCOPE=`: whitespace-separated scopes ("system", "portable", "initrd").
    pub fn sysext_scope(&self) -> Option<&str> {
        self.get("SYSEXT_SCOPE")
    }
}

/// What systemd-sysext knows about the host an extension is merged onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// The host's `ID=`, never empty.
    pub id: String,
    /// The host's `VERSION_ID=`, absent on rolling releases.
    pub version_id: Option<String>,
    /// The host's `SYSEXT_LEVEL=`, if it declares an extension API level.
    pub sysext_level: Option<String>,
    /// The systemd architecture name of the running kernel, e.g. "x86-64", "arm64".
    pub architecture: String,
    /// The scope the merge happens in: "system" for systemd-sysext; None skips the scope check.
    pub scope: Option<String>,
    /// The host's `ID_LIKE=` words.
    pub id_like: Vec<String>,
    /// The major version of the systemd that will merge (see [`crate::compat::Rules`]);
    /// `None` when unknown, which applies the strictest rules.
    pub systemd: Option<u32>,
}

impl HostIdentity {
    /// Builds the identity systemd-sysext would use for a host with this os-release, running
    /// on `architecture`, merging in the "system" scope. Empty fields count as absent.
    pub fn from_os_release(
        os: &OsRelease,
        architecture: &str,
    ) -> Result<HostIdentity, ReleaseError> {
        let id = os.get_nonempty("ID").ok_or(ReleaseError::MissingId)?;
        Ok(HostIdentity {
            id: id.to_string(),
            version_id: os.get_nonempty("VERSION_ID").map(str::to_string),
            sysext_level: os.get_nonempty("SYSEXT_LEVEL").map(str::to_string),
            architecture: architecture.to_string(),
            scope: Some("system".to_string()),
            id_like: id_like_of(os),
            systemd: None,
        })
    }
}

/// The words of `ID_LIKE=`, in order.
pub fn id_like_of(os: &OsRelease) -> Vec<String> {
    os.get_nonempty("ID_LIKE")
        .map(|l| l.split_ascii_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The systemd architecture name (as in `ARCHITECTURE=`) of the machine this binary runs on.
pub fn native_architecture() -> &'static str {
    systemd_architecture(std::env::consts::ARCH, cfg!(target_endian = "little"))
        .unwrap_or(std::env::consts::ARCH)
}

/// Maps a Rust `target_arch` name and endianness to systemd's architecture name.
pub fn systemd_architecture(rust_arch: &str, little_endian: bool) -> Option<&'static str> {
    Some(match (rust_arch, little_endian) {
        ("x86_64", _) => "x86-64",
        ("x86", _) => "x86",
        ("aarch64", true) => "arm64",
        ("aarch64", false) => "arm64-be",
        ("arm", true) => "arm",
        ("arm", false) => "arm-be",
        ("riscv64", _) => "riscv64",
        ("riscv32", _) => "riscv32",
        ("powerpc64", true) => "ppc64-le",
        ("powerpc64", false) => "ppc64",
        ("powerpc", _) => "ppc",
        ("s390x", _) => "s390x",
        ("loongarch64", _) => "loongarch64",
        ("mips64", true) => "mips64-le",
        ("mips64", false) => "mips64",
        ("mips", true) => "mips-le",
        ("mips", false) => "mips",
        ("sparc64", _) => "sparc64",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> OsRelease {
        OsRelease::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn quoting_escapes_and_whitespace_follow_parse_env_file() {
        // Each row: (input, key, expected value), per systemd's parse_env_file_internal().
        let rows: &[(&str, &str, &str)] = &[
            ("ID=debian\n", "ID", "debian"),
            ("ID=debian", "ID", "debian"),         // no final newline
            ("  ID = debian  \n", "ID", "debian"), // key and value whitespace trimmed
            ("NAME=\"Debian GNU/Linux\"\n", "NAME", "Debian GNU/Linux"),
            ("NAME='it is \"x\"'\n", "NAME", "it is \"x\""), // no escapes in single quotes
            ("X='a\\b'\n", "X", "a\\b"),
            (r#"X="a\"b\\c\$d\`e""#, "X", "a\"b\\c$d`e"), // SHELL_NEED_ESCAPE chars unescaped
            (r#"X="a\nb""#, "X", "a\\nb"),                // other escapes keep their backslash
            ("X=\"  padded  \"\n", "X", "  padded  "),
            ("X=a\\ \n", "X", "a "), // an escaped space is not trailing whitespace
            ("X=one\\\ntwo\n", "X", "onetwo"), // continuation line
            ("X=\"one\\\ntwo\"\n", "X", "onetwo"),
            ("X=\"a\"'b'c\n", "X", "abc"), // adjacent quoted parts concatenate
            ("X=a \"b\"\n", "X", "a \"b\""), // quotes mid-value are literal
            ("X=\n", "X", ""),
            ("X=\"unterminated", "X", "unterminated"),
            ("X=1\nX=2\n", "X", "2"), // the last assignment wins
        ];
        for (input, key, want) in rows {
            assert_eq!(parse(input).get(key), Some(*want), "input {input:?}");
        }
    }

    #[test]
    fn comments_and_lines_without_equals_are_skipped() {
        let os =
            parse("# comment\n; also\n\n   \nJUNK LINE\nID=x # not a comment\n#A=1\\\nB=2\nC=3\n");
        // systemd 252: a backslash-newline continues a comment, so B=2 is commented out.
        let keys: Vec<&str> = os.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["ID", "C"]);
        assert_eq!(os.id(), Some("x # not a comment"));
    }

    #[test]
    fn invalid_key_names_its_line() {
        for (input, line, key) in [
            ("ID=x\n\n1ABC=2\n", 3, "1ABC"),
            ("ID=x\nA-B=2\n", 2, "A-B"),
            ("A B=1\n", 1, "A B"),
            ("=x=1\n", 1, "=x"), // systemd takes a leading = into the key
        ] {
            let got = OsRelease::parse(input).unwrap_err();
            assert_eq!(
                got,
                ReleaseError::InvalidKey {
                    line,
                    key: key.to_string()
                },
                "{input:?}"
            );
        }
    }

    #[test]
    fn accessors_and_order() {
        let os = parse(
            "ID=flatcar\nVERSION_ID=3815.2.0\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=\"system portable\"\n",
        );
        assert_eq!(os.id(), Some("flatcar"));
        assert_eq!(os.version_id(), Some("3815.2.0"));
        assert_eq!(os.sysext_level(), Some("1.0"));
        assert_eq!(os.architecture(), Some("x86-64"));
        assert_eq!(os.sysext_scope(), Some("system portable"));
        assert_eq!(os.iter().next(), Some(("ID", "flatcar")));
        assert_eq!(os.get("NAME"), None);
    }

    #[test]
    fn host_identity_treats_empty_as_absent_and_requires_id() {
        let host =
            HostIdentity::from_os_release(&parse("ID=arch\nVERSION_ID=\n"), "arm64").unwrap();
        assert_eq!(host.id, "arch");
        assert_eq!(host.version_id, None);
        assert_eq!(host.sysext_level, None);
        assert_eq!(host.architecture, "arm64");
        assert_eq!(host.scope.as_deref(), Some("system"));
        let err = HostIdentity::from_os_release(&parse("ID=\"\"\n"), "x86-64").unwrap_err();
        assert_eq!(err, ReleaseError::MissingId);
    }

    #[test]
    fn architecture_names_match_systemd() {
        assert_eq!(systemd_architecture("x86_64", true), Some("x86-64"));
        assert_eq!(systemd_architecture("aarch64", true), Some("arm64"));
        assert_eq!(systemd_architecture("powerpc64", true), Some("ppc64-le"));
        assert_eq!(systemd_architecture("powerpc64", false), Some("ppc64"));
        assert_eq!(systemd_architecture("wasm32", true), None);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(native_architecture(), "x86-64");
    }
}
