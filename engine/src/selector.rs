//! Prometheus label selectors as Pyroscope accepts them: `{name="v", name!="v", name=~"re",
//! name!~"re"}`, regexes fully anchored (RE2 syntax), label names bare or quoted (UTF-8), string
//! values in double, single or back quotes. A label a series lacks has the value "".

use std::fmt;

use regex::Regex;

/// A matcher's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        })
    }
}

/// One `name op "value"` term.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Matcher {
    pub fn new(
        name: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Self, SelectorError> {
        let (name, value) = (name.into(), value.into());
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$")).map_err(|e| SelectorError {
                    position: 0,
                    message: format!(
                        "invalid regular expression {value:?} for label {name:?}: {e}"
                    ),
                })?,
            ),
            _ => None,
        };
        Ok(Self {
            name,
            op,
            value,
            regex,
        })
    }

    /// Whether a series whose `name` label is `value` (or "" when absent) matches.
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// Whether this matcher also accepts series without the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

/// A parse error, with the byte position where it was noticed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector at position {position}: {message}")]
pub struct SelectorError {
    pub position: usize,
    pub message: String,
}

/// A parsed selector: an optional metric name before the braces, then the matchers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selector {
    /// Text before `{` (a profile type ID in Pyroscope's legacy `query`), if any.
    pub metric: Option<String>,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Whether a series with these labels (sorted or not) matches every matcher.
    pub fn matches<'a>(&self, labels: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(labels(&m.name).unwrap_or("")))
    }
}

/// Parses `metric{...}`, `{...}` or an empty string (matches everything).
pub fn parse(input: &str) -> Result<Selector, SelectorError> {
    let mut p = Parser { s: input, pos: 0 };
    p.skip_ws();
    let mut selector = Selector::default();
    if p.done() {
        return Ok(selector);
    }
    if !p.peek_is('{') {
        let start = p.pos;
        while !p.done() && !p.peek_is('{') && !p.peek().is_some_and(char::is_whitespace) {
            p.bump();
        }
        selector.metric = Some(input[start..p.pos].to_owned());
        p.skip_ws();
        if p.done() {
            return Ok(selector);
        }
    }
    p.expect('{')?;
    loop {
        p.skip_ws();
        if p.peek_is('}') {
            p.bump();
            break;
        }
        let name = p.label_name()?;
        p.skip_ws();
        let op_pos = p.pos;
        let op = if p.eat("=~") {
            MatchOp::Regex
        } else if p.eat("!~") {
            MatchOp::NotRegex
        } else if p.eat("!=") {
            MatchOp::NotEqual
        } else if p.eat("=") {
            MatchOp::Equal
        } else {
            return Err(p.error(format!(
                "expected one of =, !=, =~, !~ after label {name:?}"
            )));
        };
        p.skip_ws();
        let value = p.string()?;
        let matcher = Matcher::new(name, op, value).map_err(|mut e| {
            e.position = op_pos;
            e
        })?;
        selector.matchers.push(matcher);
        p.skip_ws();
        if p.eat(",") {
            continue;
        }
        if p.peek_is('}') {
            p.bump();
            break;
        }
        return Err(p.error("expected ',' or '}'".into()));
    }
    p.skip_ws();
    if !p.done() {
        return Err(p.error("unexpected text after '}'".into()));
    }
    Ok(selector)
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn peek_is(&self, c: char) -> bool {
        self.peek() == Some(c)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.s[self.pos..].starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn error(&self, message: String) -> SelectorError {
        SelectorError {
            position: self.pos,
            message,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), SelectorError> {
        if self.peek_is(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.error(format!("expected '{c}'")))
        }
    }

    fn label_name(&mut self) -> Result<String, SelectorError> {
        if matches!(self.peek(), Some('"' | '\'' | '`')) {
            let name = self.string()?;
            if name.is_empty() {
                return Err(self.error("empty label name".into()));
            }
            return Ok(name);
        }
        let start = self.pos;
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                self.bump();
            }
            _ => return Err(self.error("expected a label name".into())),
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.bump();
        }
        Ok(self.s[start..self.pos].to_owned())
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        let start = self.pos;
        let quote = match self.bump() {
            Some(q @ ('"' | '\'' | '`')) => q,
            _ => {
                self.pos = start;
                return Err(self.error("expected a quoted string".into()));
            }
        };
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(SelectorError {
                        position: start,
                        message: "unterminated string".into(),
                    });
                }
                Some(c) if c == quote => return Ok(out),
                Some('\\') if quote != '`' => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('\'') => out.push('\''),
                    Some('u') => {
                        let hex: String = (0..4).filter_map(|_| self.bump()).collect();
                        let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        out.push(c.ok_or_else(|| self.error(format!("invalid escape \\u{hex}")))?);
                    }
                    other => {
                        return Err(self.error(format!(
                            "invalid escape \\{}",
                            other.map(String::from).unwrap_or_default()
                        )));
                    }
                },
                Some(c) => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher::new(name, op, value).unwrap()
    }

    #[test]
    fn parses_every_operator_and_quoting() {
        let s = parse(
            r#"{service_name="a", env!="prod",  region=~"eu-.*" , "k8s.pod"!~'x|y', msg=`a\b`}"#,
        )
        .unwrap();
        assert_eq!(s.metric, None);
        assert_eq!(
            s.matchers,
            vec![
                m("service_name", MatchOp::Equal, "a"),
                m("env", MatchOp::NotEqual, "prod"),
                m("region", MatchOp::Regex, "eu-.*"),
                m("k8s.pod", MatchOp::NotRegex, "x|y"),
                m("msg", MatchOp::Equal, "a\\b"),
            ]
        );
        let legacy =
            parse(r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="x"}"#).unwrap();
        assert_eq!(
            legacy.metric.as_deref(),
            Some("process_cpu:cpu:nanoseconds:cpu:nanoseconds")
        );
        assert_eq!(parse("").unwrap(), Selector::default());
        assert_eq!(parse("{}").unwrap(), Selector::default());
        assert_eq!(
            parse(r#"{a="\"q\" \u00e9"}"#).unwrap().matchers[0].value,
            "\"q\" é"
        );
    }

    #[test]
    fn regexes_are_fully_anchored_and_absent_labels_are_empty() {
        let re = m("region", MatchOp::Regex, "eu");
        assert!(re.matches("eu") && !re.matches("eu-west") && !re.matches("xeu"));
        let alt = m("x", MatchOp::Regex, "a|b");
        assert!(alt.matches("a") && alt.matches("b") && !alt.matches("ab"));
        let s = parse(r#"{env!="prod", team=~".*"}"#).unwrap();
        let labels = [("service_name", "svc")];
        let get = |n: &str| labels.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert!(s.matches(get));
        assert!(!parse(r#"{team=~".+"}"#).unwrap().matches(get));
    }

    #[test]
    fn errors_point_at_the_problem() {
        for (input, position, message) in [
            (r#"{a="1""#, 6, "expected ',' or '}'"),
            (r#"{a~"1"}"#, 2, "expected one of =, !=, =~, !~"),
            (r#"{a="1}"#, 3, "unterminated string"),
            (r#"{a=~"(("}"#, 2, "invalid regular expression"),
            (r#"{1a="x"}"#, 1, "expected a label name"),
            (r#"{a="x"} extra"#, 8, "unexpected text"),
            (r#"{a=x}"#, 3, "expected a quoted string"),
        ] {
            let err = parse(input).unwrap_err();
            assert_eq!(err.position, position, "{input}: {err}");
            assert!(err.message.contains(message), "{input}: {err}");
        }
    }
}
