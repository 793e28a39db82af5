//! How a failed command is told: its message and causes, each said once, as a line on stderr or
//! as the `--json` error document on stdout.

use serde::Serialize;

use super::exit;

/// The version of every JSON document upd prints; bumped when a field changes meaning or goes.
pub const SCHEMA: u32 = 1;

/// A failed command, ready to print.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The exit code's name ([`exit::kind`]).
    pub kind: &'static str,
    /// The exit code.
    pub exit_code: u8,
    /// The outermost message.
    pub message: String,
    /// The causes, outermost first, without those an outer message already quotes.
    pub causes: Vec<String>,
}

impl Report {
    /// The report of `e`: its exit code and its chain with repeats left out.
    pub fn of(e: &anyhow::Error) -> Report {
        let exit_code = exit::of(e);
        let message = e.to_string();
        let mut said = message.clone();
        let mut causes = Vec::new();
        for cause in e.chain().skip(1) {
            let text = cause.to_string();
            // thiserror variants often quote their source ("…: {source}"): say it once.
            if text.is_empty() || said.contains(&text) {
                continue;
            }
            said.push_str(": ");
            said.push_str(&text);
            causes.push(text);
        }
        Report {
            kind: exit::kind(exit_code),
            exit_code,
            message,
            causes,
        }
    }

    /// One line: the message, then each cause.
    pub fn line(&self) -> String {
        std::iter::once(self.message.as_str())
            .chain(self.causes.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(": ")
    }

    /// The `--json` document: `{"schema":1,"error":{…}}`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "schema": SCHEMA, "error": self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Quotes(#[source] std::io::Error);

    #[test]
    fn a_cause_an_outer_message_quotes_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(Quotes(io)).context("reading x");
        let r = Report::of(&e);
        assert_eq!(r.line(), "reading x: outer: No such file");
        assert_eq!(r.causes, ["outer: No such file"]);
        assert_eq!(r.line().matches("No such file").count(), 1);
    }

    #[test]
    fn the_json_error_carries_schema_kind_and_code() {
        let r = Report::of(&anyhow::anyhow!("bad"));
        let v = r.json();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["error"]["kind"], "failure");
        assert_eq!(v["error"]["exit_code"], 1);
        assert_eq!(v["error"]["message"], "bad");
        assert_eq!(v["error"]["causes"], serde_json::json!([]));
    }
}
