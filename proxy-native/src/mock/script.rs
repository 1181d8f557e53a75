//! A mock provider's script: the `[providers.mock]` table, checked at start-up, and the pure
//! function from a conversation to the mock's answer. Nothing here knows HTTP or the OpenAI
//! format; `openai.rs` translates both ways.

use std::collections::HashMap;

use regex::Regex;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::template::{Part, Template, Values};

/// Default pause between two streamed chunks: slow enough to watch a reply being written, fast
/// enough not to bore.
pub const DEFAULT_CHUNK_DELAY_MS: u64 = 30;

/// What a mock answers when no rule matches and the script sets no `fallback`.
const DEFAULT_FALLBACK: &str = "This is a mock model: its answers come from a script in the \
     proxy's configuration, and no rule of that script matched your message.";

/// The built-in demo script (see [`MockScript::demo`]).
const DEMO: &str = include_str!("demo.toml");

/// The script of a mock provider: its rules, its fallback reply and how it streams.
///
/// Deserialized from a `[providers.mock]` table; [`MockScript::check`] completes the checks that
/// need more than one key, and `Config::load` runs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockScript {
    /// Pause before each streamed chunk after the first, in milliseconds.
    #[serde(default = "default_chunk_delay_ms")]
    pub chunk_delay_ms: u64,
    /// Also serve the mock as an OpenAI-compatible endpoint at `/mock/<name>/v1`.
    #[serde(default)]
    pub serve_http: bool,
    /// The rules, tried in order; the first that applies answers.
    #[serde(default)]
    rules: Vec<Rule>,
    /// The answer when no rule applies.
    #[serde(default)]
    fallback: Option<Template>,
}

fn default_chunk_delay_ms() -> u64 {
    DEFAULT_CHUNK_DELAY_MS
}

impl Default for MockScript {
    /// No rules: every message gets the fallback reply.
    fn default() -> Self {
        MockScript {
            chunk_delay_ms: DEFAULT_CHUNK_DELAY_MS,
            serve_http: false,
            rules: Vec::new(),
            fallback: None,
        }
    }
}

/// One `[[providers.mock.rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    /// Matched against the text of the last user message; absent matches everything.
    #[serde(rename = "match", default)]
    pattern: Option<Pattern>,
    /// Calls to make (several are parallel calls in one answer).
    #[serde(default)]
    tool_calls: Vec<CallTemplate>,
    /// The answer; with `tool_calls`, the answer once their results are back.
    #[serde(default)]
    reply: Option<Template>,
}

/// A regular expression, compiled while the configuration is read so that a bad one is reported
/// with its key.
#[derive(Debug, Clone)]
struct Pattern(Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Regex::new(&text)
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("not a valid regular expression: {e}")))
    }
}

/// One entry of a rule's `tool_calls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallTemplate {
    /// The function to call; it must be among the request's tools.
    name: String,
    /// Its arguments, a table whose strings may hold placeholders.
    #[serde(default)]
    arguments: Arguments,
}

/// Tool-call arguments: a JSON object whose string values (at any depth) are templates.
#[derive(Debug, Clone, Default)]
struct Arguments(Vec<(String, Argument)>);

#[derive(Debug, Clone)]
enum Argument {
    Text(Template),
    List(Vec<Argument>),
    Table(Vec<(String, Argument)>),
    /// Numbers, booleans, null: copied as they are.
    Plain(Value),
}

impl<'de> Deserialize<'de> for Arguments {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = serde_json::Map::<String, Value>::deserialize(deserializer)?;
        table_arguments(table)
            .map(Arguments)
            .map_err(serde::de::Error::custom)
    }
}

fn table_arguments(
    table: serde_json::Map<String, Value>,
) -> Result<Vec<(String, Argument)>, String> {
    table
        .into_iter()
        .map(|(key, value)| {
            let argument = argument(value).map_err(|e| format!("in `{key}`: {e}"))?;
            Ok((key, argument))
        })
        .collect()
}

fn argument(value: Value) -> Result<Argument, String> {
    Ok(match value {
        Value::String(text) => Argument::Text(Template::parse(&text)?),
        Value::Array(items) => {
            Argument::List(items.into_iter().map(argument).collect::<Result<_, _>>()?)
        }
        Value::Object(table) => Argument::Table(table_arguments(table)?),
        plain => Argument::Plain(plain),
    })
}

impl Argument {
    fn templates<'a>(&'a self, out: &mut Vec<&'a Template>) {
        match self {
            Argument::Text(t) => out.push(t),
            Argument::List(items) => items.iter().for_each(|a| a.templates(out)),
            Argument::Table(table) => table.iter().for_each(|(_, a)| a.templates(out)),
            Argument::Plain(_) => {}
        }
    }

    fn render(&self, values: &dyn Values) -> Value {
        match self {
            Argument::Text(t) => Value::String(t.render(values)),
            Argument::List(items) => items.iter().map(|a| a.render(values)).collect(),
            Argument::Table(table) => render_table(table, values),
            Argument::Plain(v) => v.clone(),
        }
    }
}

fn render_table(table: &[(String, Argument)], values: &dyn Values) -> Value {
    Value::Object(
        table
            .iter()
            .map(|(k, a)| (k.clone(), a.render(values)))
            .collect(),
    )
}

/// A problem in a script: the key (relative to the script's table) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// E.g. `rules[1].tool_calls[0].name`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl MockScript {
    /// The built-in demo script, written for the demo MCP server configured under the name
    /// `demo` (tools `demo__now`, `demo__calculate`, `demo__search_notes`): it answers questions
    /// about the time, arithmetic and notes with those tools, both time and arithmetic at once
    /// with two parallel calls, and otherwise suggests what to ask. Served over HTTP, 30 ms a
    /// chunk. Its text is `proxy-native/src/mock/demo.toml`.
    pub fn demo() -> MockScript {
        // A constant that a unit test parses and checks, so this never falls back in practice;
        // falling back keeps the proxy up rather than stopping it over a demo.
        toml::from_str::<MockScript>(DEMO).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the built-in demo mock script is invalid");
            MockScript {
                serve_http: true,
                ..MockScript::default()
            }
        })
    }

    /// Checks what deserialization alone cannot: every rule does something, tool names are set
    /// and every placeholder refers to something that will exist when it is filled in.
    pub fn check(&self) -> Result<(), ScriptError> {
        for (i, rule) in self.rules.iter().enumerate() {
            let key = |field: &str| format!("rules[{i}]{field}");
            if rule.reply.is_none() && rule.tool_calls.is_empty() {
                return Err(ScriptError {
                    key: key(""),
                    problem: "a rule needs a `reply`, `tool_calls`, or both".into(),
                });
            }
            for (j, call) in rule.tool_calls.iter().enumerate() {
                if call.name.trim().is_empty() {
                    return Err(ScriptError {
                        key: key(&format!(".tool_calls[{j}].name")),
                        problem: "must not be empty".into(),
                    });
                }
                let mut templates = Vec::new();
                call.arguments
                    .0
                    .iter()
                    .for_each(|(_, a)| a.templates(&mut templates));
                for template in templates {
                    rule.check_placeholders(template, false)
                        .map_err(|problem| ScriptError {
                            key: key(&format!(".tool_calls[{j}].arguments")),
                            problem,
                        })?;
                }
            }
            if let Some(reply) = &rule.reply {
                rule.check_placeholders(reply, true)
                    .map_err(|problem| ScriptError {
                        key: key(".reply"),
                        problem,
                    })?;
            }
        }
        if let Some(part) = self.fallback.as_ref().and_then(|f| f.placeholders().next()) {
            return Err(ScriptError {
                key: "fallback".into(),
                problem: format!(
                    "`{part}`: the fallback answers when no rule matched, so it has no \
                     placeholders (write `{{{{` and `}}}}` for literal braces)"
                ),
            });
        }
        Ok(())
    }

    /// The answer to `conversation`: the first rule that applies, else the fallback.
    ///
    /// A rule applies when its pattern matches the last user message and, if it calls tools,
    /// every one of them is offered. If the conversation ends with the results of exactly that
    /// rule's calls, the rule answers with its `reply`; if it ends with results of other calls,
    /// the rule is passed over, so that a mock never asks for tools again and again in an agent
    /// loop.
    pub(crate) fn answer(&self, conversation: &Conversation) -> Answer {
        let user_text = conversation.last_user_text();
        let answered = conversation.answered_calls();
        for (index, rule) in self.rules.iter().enumerate() {
            let captures = match &rule.pattern {
                Some(Pattern(regex)) => match regex.captures(user_text) {
                    Some(c) => Captures::of(regex, &c),
                    None => continue,
                },
                None => Captures::default(),
            };
            if rule.tool_calls.is_empty() {
                let text = rule
                    .reply
                    .as_ref()
                    .map(|r| r.render(&captures))
                    .unwrap_or_default();
                return Answer::text(Some(index), text);
            }
            if !rule
                .tool_calls
                .iter()
                .all(|c| conversation.tools.contains(&c.name))
            {
                continue;
            }
            match &answered {
                None => {
                    let calls = rule
                        .tool_calls
                        .iter()
                        .map(|c| PlannedCall {
                            name: c.name.clone(),
                            arguments: render_table(&c.arguments.0, &captures).to_string(),
                        })
                        .collect();
                    return Answer {
                        rule: Some(index),
                        text: None,
                        calls,
                    };
                }
                Some(answered) if answered.names_match(&rule.tool_calls) => {
                    let values = Captures {
                        results: answered.results.clone(),
                        ..captures
                    };
                    let text = match &rule.reply {
                        Some(reply) => reply.render(&values),
                        None => values.results.join("\n"),
                    };
                    return Answer::text(Some(index), text);
                }
                Some(_) => continue,
            }
        }
        let text = match &self.fallback {
            Some(fallback) => fallback.render(&Captures::default()),
            None => DEFAULT_FALLBACK.to_owned(),
        };
        Answer::text(None, text)
    }
}

impl Rule {
    fn check_placeholders(&self, template: &Template, in_reply: bool) -> Result<(), String> {
        for part in template.placeholders() {
            match part {
                Part::Group(_) | Part::Named(_) => {
                    let Some(Pattern(regex)) = &self.pattern else {
                        return Err(format!(
                            "`{part}` refers to a capture group, but the rule has no `match`"
                        ));
                    };
                    let exists = match part {
                        Part::Group(n) => *n < regex.captures_len(),
                        Part::Named(name) => regex.capture_names().flatten().any(|c| c == name),
                        _ => true,
                    };
                    if !exists {
                        return Err(format!(
                            "`{part}`: `match` has no such capture group (it has {} numbered \
                             group(s){})",
                            regex.captures_len() - 1,
                            named_groups(regex)
                        ));
                    }
                }
                Part::Results | Part::Result(_) if !in_reply || self.tool_calls.is_empty() => {
                    return Err(format!(
                        "`{part}` is the text of tool results, which only a `reply` of a rule \
                         with `tool_calls` has"
                    ));
                }
                Part::Result(n) if *n > self.tool_calls.len() => {
                    return Err(format!(
                        "`{part}`: the rule makes only {} tool call(s)",
                        self.tool_calls.len()
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn named_groups(regex: &Regex) -> String {
    let names: Vec<&str> = regex.capture_names().flatten().collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(", named {}", names.join(", "))
    }
}

/// The capture groups of a match (trimmed: a pattern written for a demo often catches the
/// spaces around a value) and, once they are back, the tool results.
#[derive(Debug, Default)]
struct Captures {
    groups: Vec<String>,
    named: HashMap<String, String>,
    results: Vec<String>,
}

impl Captures {
    fn of(regex: &Regex, captures: &regex::Captures<'_>) -> Self {
        let text = |m: Option<regex::Match<'_>>| m.map_or("", |m| m.as_str().trim()).to_owned();
        Captures {
            groups: captures.iter().map(text).collect(),
            named: regex
                .capture_names()
                .flatten()
                .map(|name| (name.to_owned(), text(captures.name(name))))
                .collect(),
            results: Vec::new(),
        }
    }
}

impl Values for Captures {
    fn group(&self, index: usize) -> &str {
        self.groups.get(index).map_or("", String::as_str)
    }

    fn named(&self, name: &str) -> &str {
        self.named.get(name).map_or("", String::as_str)
    }

    fn results(&self) -> &[String] {
        &self.results
    }
}

/// The parts of a chat request a script looks at.
#[derive(Debug, Clone, Default)]
pub(crate) struct Conversation {
    /// The messages, in order.
    pub turns: Vec<Turn>,
    /// The names of the tools the model may call (none when `tool_choice` is `"none"`).
    pub tools: Vec<String>,
}

/// One message, as far as a script cares.
#[derive(Debug, Clone)]
pub(crate) enum Turn {
    /// The user's text (text parts joined with spaces).
    User(String),
    /// The model's earlier answer: the tool calls it made, as `(id, name)`.
    Assistant(Vec<(String, String)>),
    /// A tool result.
    Tool {
        /// The call it answers.
        call_id: String,
        /// The result text.
        content: String,
    },
    /// System and other messages.
    Other,
}

/// The calls the conversation ends with the results of.
#[derive(Debug)]
struct AnsweredCalls {
    names: Vec<String>,
    /// In the order of the calls.
    results: Vec<String>,
}

impl AnsweredCalls {
    fn names_match(&self, calls: &[CallTemplate]) -> bool {
        self.names.len() == calls.len() && self.names.iter().zip(calls).all(|(n, c)| *n == c.name)
    }
}

impl Conversation {
    fn last_user_text(&self) -> &str {
        self.turns
            .iter()
            .rev()
            .find_map(|t| match t {
                Turn::User(text) => Some(text.as_str()),
                _ => None,
            })
            .unwrap_or("")
    }

    /// The tool calls whose results end the conversation (tool messages after the assistant
    /// message that made the calls), if it ends that way.
    fn answered_calls(&self) -> Option<AnsweredCalls> {
        let tools = self
            .turns
            .iter()
            .rev()
            .take_while(|t| matches!(t, Turn::Tool { .. }))
            .count();
        if tools == 0 {
            return None;
        }
        let results = &self.turns[self.turns.len() - tools..];
        let Some(Turn::Assistant(calls)) = self.turns.iter().rev().nth(tools) else {
            return None;
        };
        // Results are matched to calls by id; a client that lost the ids gets them in order.
        let by_position = |i: usize| match results.get(i) {
            Some(Turn::Tool { content, .. }) => content.clone(),
            _ => String::new(),
        };
        let ordered = calls
            .iter()
            .enumerate()
            .map(|(i, (id, _))| {
                results
                    .iter()
                    .find_map(|t| match t {
                        Turn::Tool { call_id, content } if call_id == id => Some(content.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| by_position(i))
            })
            .collect();
        Some(AnsweredCalls {
            names: calls.iter().map(|(_, name)| name.clone()).collect(),
            results: ordered,
        })
    }
}

/// What the mock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The index of the rule that answered; `None` for the fallback.
    pub rule: Option<usize>,
    /// The text, when it answers in words.
    pub text: Option<String>,
    /// The calls, when it calls tools.
    pub calls: Vec<PlannedCall>,
}

impl Answer {
    fn text(rule: Option<usize>, text: String) -> Self {
        Answer {
            rule,
            text: Some(text),
            calls: Vec::new(),
        }
    }
}

/// A tool call the mock makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedCall {
    /// The function name.
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn script(toml_text: &str) -> MockScript {
        let script: MockScript = toml::from_str(toml_text).unwrap();
        script.check().unwrap();
        script
    }

    fn user(text: &str) -> Conversation {
        Conversation {
            turns: vec![Turn::Other, Turn::User(text.into())],
            tools: Vec::new(),
        }
    }

    fn with_tools(mut c: Conversation, tools: &[&str]) -> Conversation {
        c.tools = tools.iter().map(|t| (*t).to_owned()).collect();
        c
    }

    /// `c` followed by the answer's calls (ids `id0`, `id1`...) and `results`, in that order.
    fn answered(mut c: Conversation, answer: &Answer, results: &[(&str, &str)]) -> Conversation {
        let calls = answer
            .calls
            .iter()
            .enumerate()
            .map(|(i, call)| (format!("id{i}"), call.name.clone()))
            .collect();
        c.turns.push(Turn::Assistant(calls));
        for (id, content) in results {
            c.turns.push(Turn::Tool {
                call_id: (*id).into(),
                content: (*content).into(),
            });
        }
        c
    }

    fn text_of(answer: &Answer) -> &str {
        assert!(answer.calls.is_empty(), "{answer:?}");
        answer.text.as_deref().unwrap()
    }

    fn arguments(call: &PlannedCall) -> Value {
        serde_json::from_str(&call.arguments).unwrap()
    }

    const CALC: &str = r#"
        [[rules]]
        match = '(?i)^hello\b'
        reply = "Hi!"
        [[rules]]
        match = '(?i)calculate\s+(?P<expr>[-+*/().\d\s]+)'
        tool_calls = [{ name = "calc", arguments = { expression = "{expr}", nested = { list = ["{1}", 2, true] } } }]
        reply = "{1} = {results}"
        [[rules]]
        match = '(?i)calculate\s+(.+)'
        reply = "I cannot calculate {1} without a calculator."
    "#;

    #[test]
    fn the_first_matching_rule_answers_with_its_captures() {
        let s = script(CALC);
        let a = s.answer(&user("Hello there"));
        assert_eq!((a.rule, text_of(&a)), (Some(0), "Hi!"));
        let a = s.answer(&with_tools(user("please calculate 12*(3+4) "), &["calc"]));
        assert_eq!(a.rule, Some(1));
        assert_eq!(a.text, None);
        assert_eq!(a.calls.len(), 1);
        assert_eq!(a.calls[0].name, "calc");
        assert_eq!(
            arguments(&a.calls[0]),
            json!({"expression": "12*(3+4)", "nested": {"list": ["12*(3+4)", 2, true]}})
        );
    }

    #[test]
    fn a_rule_whose_tools_are_not_offered_falls_through() {
        let s = script(CALC);
        for tools in [&[][..], &["other"][..]] {
            let a = s.answer(&with_tools(user("calculate 1+1"), tools));
            assert_eq!(a.rule, Some(2));
            assert_eq!(text_of(&a), "I cannot calculate 1+1 without a calculator.");
        }
    }

    #[test]
    fn results_of_the_rules_calls_are_answered_with_its_reply() {
        let s = script(CALC);
        let question = with_tools(user("calculate 2 + 2"), &["calc"]);
        let first = s.answer(&question);
        let a = s.answer(&answered(question, &first, &[("id0", "4")]));
        assert_eq!((a.rule, text_of(&a)), (Some(1), "2 + 2 = 4"));
    }

    #[test]
    fn results_of_other_calls_never_trigger_more_calls() {
        let s = script(CALC);
        let question = with_tools(user("calculate 2 + 2"), &["calc"]);
        let other = Answer {
            rule: None,
            text: None,
            calls: vec![PlannedCall {
                name: "something_else".into(),
                arguments: "{}".into(),
            }],
        };
        let a = s.answer(&answered(question, &other, &[("id0", "?")]));
        assert_eq!(a.rule, Some(2));
    }

    #[test]
    fn parallel_calls_and_their_results_in_call_order() {
        let s = script(
            r#"
            [[rules]]
            match = 'weather in (\w+) and (\w+)'
            tool_calls = [
              { name = "weather", arguments = { city = "{1}" } },
              { name = "weather", arguments = { city = "{2}" } },
            ]
            reply = "{1}: {results.1}; {2}: {results.2}; all: {results}"
            "#,
        );
        let question = with_tools(user("weather in Paris and Oslo"), &["weather"]);
        let first = s.answer(&question);
        let cities: Vec<Value> = first
            .calls
            .iter()
            .map(|c| arguments(c)["city"].clone())
            .collect();
        assert_eq!(cities, [json!("Paris"), json!("Oslo")]);
        // Results may come back in any order; they are matched to the calls by id.
        let a = s.answer(&answered(
            question,
            &first,
            &[("id1", "snow"), ("id0", "sun")],
        ));
        assert_eq!(text_of(&a), "Paris: sun; Oslo: snow; all: sun\nsnow");
    }

    #[test]
    fn a_rule_without_a_pattern_always_matches_and_the_last_user_message_counts() {
        let s = script("[[rules]]\nmatch = 'second'\nreply = \"2\"\n[[rules]]\nreply = \"any\"\n");
        let mut c = user("second");
        c.turns.push(Turn::Assistant(Vec::new()));
        c.turns.push(Turn::User("first".into()));
        assert_eq!(text_of(&s.answer(&c)), "any");
        assert_eq!(text_of(&s.answer(&Conversation::default())), "any");
    }

    #[test]
    fn without_a_matching_rule_the_fallback_answers() {
        let s = script(CALC);
        let a = s.answer(&user("good morning"));
        assert_eq!(a.rule, None);
        assert!(text_of(&a).contains("mock"), "{a:?}");
        let s = script("fallback = \"Ask me to {{calculate}} something.\"\n");
        assert_eq!(
            text_of(&s.answer(&user("x"))),
            "Ask me to {calculate} something."
        );
    }

    #[test]
    fn defaults_are_demo_friendly() {
        let s = script("");
        assert_eq!(s.chunk_delay_ms, DEFAULT_CHUNK_DELAY_MS);
        assert!(!s.serve_http);
        assert_eq!(MockScript::default().chunk_delay_ms, DEFAULT_CHUNK_DELAY_MS);
    }

    fn problem(toml_text: &str) -> String {
        match toml::from_str::<MockScript>(toml_text) {
            Err(e) => e.to_string(),
            Ok(s) => {
                let e = s.check().unwrap_err();
                format!("{}: {}", e.key, e.problem)
            }
        }
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expected) in [
            (
                "[[rules]]\nmatch = '(unclosed'\nreply = \"x\"\n",
                "regular expression",
            ),
            ("[[rules]]\nreply = \"{1\"\n", "unclosed"),
            ("[[rules]]\nmatch = 'a'\n", "rules[0]: a rule needs"),
            (
                "[[rules]]\ntool_calls = [{ name = \"\" }]\n",
                "rules[0].tool_calls[0].name: must not be empty",
            ),
            ("[[rules]]\nreply = \"{1}\"\n", "rules[0].reply: `{1}`"),
            (
                "[[rules]]\nmatch = '(a)'\nreply = \"{2}\"\n",
                "has 1 numbered group(s)",
            ),
            (
                "[[rules]]\nmatch = '(?P<x>a)'\nreply = \"{y}\"\n",
                "named x",
            ),
            (
                "[[rules]]\nmatch = 'a'\nreply = \"{results}\"\n",
                "only a `reply` of a rule with `tool_calls`",
            ),
            (
                "[[rules]]\ntool_calls = [{ name = \"f\", arguments = { a = \"{results}\" } }]\n",
                "rules[0].tool_calls[0].arguments",
            ),
            (
                "[[rules]]\ntool_calls = [{ name = \"f\" }]\nreply = \"{results.2}\"\n",
                "only 1 tool call(s)",
            ),
            (
                "[[rules]]\ntool_calls = [{ name = \"f\", arguments = { a = \"{x\" } }]\n",
                "in `a`: unclosed",
            ),
            (
                "[[rules]]\ntool_calls = [{ name = \"f\", arguments = 3 }]\n",
                "map",
            ),
            ("fallback = \"{1}\"\n", "fallback: `{1}`"),
            (
                "[[rules]]\nreply = \"x\"\nanswer = \"y\"\n",
                "unknown field `answer`",
            ),
            ("speed = 3\n", "unknown field `speed`"),
        ] {
            let p = problem(text);
            assert!(p.contains(expected), "{text:?}: {p}");
        }
    }

    fn demo_conversation(text: &str) -> Conversation {
        with_tools(
            user(text),
            &["demo__now", "demo__calculate", "demo__search_notes"],
        )
    }

    fn demo_calls(text: &str) -> Vec<(String, Value)> {
        MockScript::demo()
            .answer(&demo_conversation(text))
            .calls
            .iter()
            .map(|c| (c.name.clone(), arguments(c)))
            .collect()
    }

    #[test]
    fn the_demo_script_is_valid_and_served() {
        let demo: MockScript = toml::from_str(DEMO).unwrap();
        demo.check().unwrap();
        assert!(MockScript::demo().serve_http);
        assert_eq!(MockScript::demo().chunk_delay_ms, DEFAULT_CHUNK_DELAY_MS);
    }

    #[test]
    fn the_demo_script_drives_the_demo_tools() {
        let now = || ("demo__now".to_owned(), json!({}));
        let calc = |e: &str| ("demo__calculate".to_owned(), json!({"expression": e}));
        let notes = |q: &str| ("demo__search_notes".to_owned(), json!({"query": q}));
        assert_eq!(demo_calls("What time is it?"), [now()]);
        assert_eq!(demo_calls("What's today's date?"), [now()]);
        assert_eq!(
            demo_calls("What time is it in UTC?"),
            [("demo__now".to_owned(), json!({"timezone": "UTC"}))]
        );
        assert_eq!(
            demo_calls("what's the time at -05:30"),
            [("demo__now".to_owned(), json!({"timezone": "-05:30"}))]
        );
        assert_eq!(demo_calls("Calculate 12*(3+4)"), [calc("12*(3+4)")]);
        assert_eq!(demo_calls("what is 2 + 2?"), [calc("2 + 2")]);
        assert_eq!(demo_calls("compute (1.5+2)/7, please"), [calc("(1.5+2)/7")]);
        assert_eq!(demo_calls("Search my notes for rust"), [notes("rust")]);
        assert_eq!(
            demo_calls("Any notes about time management?"),
            [notes("time management")]
        );
        assert_eq!(
            demo_calls("What time is it, and what is 12*(3+4)?"),
            [now(), calc("12*(3+4)")]
        );
        assert_eq!(
            demo_calls("Calculate 6*7 and tell me the time"),
            [now(), calc("6*7")]
        );
    }

    #[test]
    fn the_demo_script_reads_naturally() {
        let demo = MockScript::demo();
        let question = demo_conversation("What time is it, and what is 12*(3+4)?");
        let first = demo.answer(&question);
        let a = demo.answer(&answered(
            question,
            &first,
            &[
                ("id0", "Friday, 2026-01-02T03:04:05Z (UTC+00:00)"),
                ("id1", "12*(3+4) = 84"),
            ],
        ));
        assert_eq!(
            text_of(&a),
            "Two tools at once, called in parallel:\n\n\
             - the clock: Friday, 2026-01-02T03:04:05Z (UTC+00:00)\n\
             - the calculator: 12*(3+4) = 84"
        );
        // Without the tools, the questions fall through to a reply that says what to try.
        let a = demo.answer(&user("What time is it?"));
        assert_eq!(a.rule, None);
        assert!(text_of(&a).contains("What time is it?"), "{a:?}");
        let a = demo.answer(&user("hello"));
        assert!(text_of(&a).contains("mock"), "{a:?}");
    }
}
