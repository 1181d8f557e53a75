//! The text templates of a mock script: literal text with `{1}`, `{name}`, `{results}` and
//! `{results.N}` placeholders. They are parsed when the configuration is loaded, so a typo is a
//! start-up error and filling one in at request time cannot fail.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Text copied as it is (`{{` and `}}` already unescaped).
    Literal(String),
    /// `{N}`: capture group N of the rule's `match` (0 is the whole match).
    Group(usize),
    /// `{name}`: the named capture group.
    Named(String),
    /// `{results}`: the text of every tool result, one per line.
    Results,
    /// `{results.N}`: the text of the N-th tool result (from 1, in the order of the calls).
    Result(usize),
}

/// What the placeholders of a template are filled with.
pub(crate) trait Values {
    /// Capture group `index`; empty when it did not take part in the match.
    fn group(&self, index: usize) -> &str;
    /// The named capture group; empty when it did not take part in the match.
    fn named(&self, name: &str) -> &str;
    /// The tool results, in the order of the calls.
    fn results(&self) -> &[String];
}

impl Template {
    /// Parses `text`; `{{` and `}}` stand for literal braces.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.next_if(|&(_, c)| c == '{').is_some() => literal.push('{'),
                '}' if chars.next_if(|&(_, c)| c == '}').is_some() => literal.push('}'),
                '{' => {
                    let rest = &text[at + 1..];
                    let Some(len) = rest.find('}') else {
                        return Err(format!(
                            "unclosed `{{` at byte {at} (write `{{{{` for a literal brace)"
                        ));
                    };
                    let name = &rest[..len];
                    // Skip the placeholder's characters and its closing brace.
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder(name)?);
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` at byte {at} (write `}}}}` for a literal brace)"
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// The placeholders, for checking them against the rule they belong to.
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(|p| !matches!(p, Part::Literal(_)))
    }

    /// The text with every placeholder filled in.
    pub(crate) fn render(&self, values: &dyn Values) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Group(index) => out.push_str(values.group(*index)),
                Part::Named(name) => out.push_str(values.named(name)),
                Part::Results => out.push_str(&values.results().join("\n")),
                Part::Result(n) => {
                    let result = n.checked_sub(1).and_then(|i| values.results().get(i));
                    out.push_str(result.map_or("", String::as_str));
                }
            }
        }
        out
    }
}

fn placeholder(name: &str) -> Result<Part, String> {
    if name == "results" {
        return Ok(Part::Results);
    }
    if let Some(n) = name.strip_prefix("results.") {
        return match n.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Part::Result(n)),
            _ => Err(format!(
                "`{{{name}}}`: tool results are numbered from 1, as in `{{results.1}}`"
            )),
        };
    }
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        return name
            .parse()
            .map(Part::Group)
            .map_err(|_| format!("`{{{name}}}`: no such capture group"));
    }
    if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Ok(Part::Named(name.to_owned()));
    }
    Err(format!(
        "`{{{name}}}` is not a placeholder; use `{{1}}`, `{{name}}`, `{{results}}` or \
         `{{results.1}}`, and `{{{{`/`}}}}` for literal braces"
    ))
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Literal(text) => f.write_str(text),
            Part::Group(index) => write!(f, "{{{index}}}"),
            Part::Named(name) => write!(f, "{{{name}}}"),
            Part::Results => f.write_str("{results}"),
            Part::Result(n) => write!(f, "{{results.{n}}}"),
        }
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Template::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Values for Fixed {
        fn group(&self, index: usize) -> &str {
            ["whole", "one"].get(index).copied().unwrap_or("")
        }
        fn named(&self, name: &str) -> &str {
            if name == "city" { "Paris" } else { "" }
        }
        fn results(&self) -> &[String] {
            static RESULTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
            RESULTS.get_or_init(|| vec!["r1".into(), "r2".into()])
        }
    }

    fn render(text: &str) -> String {
        Template::parse(text).unwrap().render(&Fixed)
    }

    #[test]
    fn placeholders_are_filled_in() {
        assert_eq!(render("{1} in {city}: {0}"), "one in Paris: whole");
        assert_eq!(render("[{results}]"), "[r1\nr2]");
        assert_eq!(render("{results.2}, {results.1}, {results.3}"), "r2, r1, ");
        assert_eq!(render("{7}{other}"), "");
        assert_eq!(render("{{1}} is {{literal}}"), "{1} is {literal}");
        assert_eq!(render("héllo {1}ü"), "héllo oneü");
        assert_eq!(render(""), "");
    }

    #[test]
    fn malformed_templates_are_refused() {
        for (text, problem) in [
            ("a {1", "unclosed"),
            ("a } b", "unmatched"),
            ("{}", "not a placeholder"),
            ("{a b}", "not a placeholder"),
            ("{results.0}", "numbered from 1"),
            ("{results.x}", "numbered from 1"),
            ("{99999999999999999999999}", "no such capture group"),
        ] {
            let e = Template::parse(text).unwrap_err();
            assert!(e.contains(problem), "{text:?}: {e}");
        }
    }

    #[test]
    fn placeholders_are_listed_for_checking() {
        let t = Template::parse("x {1} {name} {results.2}").unwrap();
        let shown: Vec<String> = t.placeholders().map(ToString::to_string).collect();
        assert_eq!(shown, ["{1}", "{name}", "{results.2}"]);
    }
}
