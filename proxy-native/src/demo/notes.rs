//! The demo server's notes (embedded from `notes.toml`) and the search over them.
//!
//! Ranking is a plain weighted term count, scaled by how rare each query word is among the notes:
//! a word in the title counts 3, in the tags 2, in the text 1, and a query word of three letters or
//! more that only starts a word of the note ("cook" in "cooking") counts half. Equal scores are
//! ordered by id, so results never depend on anything but the query.

use std::collections::HashSet;
use std::sync::LazyLock;

use rmcp::schemars;
use serde::{Deserialize, Serialize};

/// Most results one search returns.
pub const MAX_LIMIT: usize = 20;
/// Results returned when the caller does not say.
pub const DEFAULT_LIMIT: usize = 5;
/// Longest query accepted, in characters.
pub const MAX_QUERY_LENGTH: usize = 500;
/// Length of a result's snippet, in characters (ellipses aside).
const SNIPPET_CHARS: usize = 160;
/// How much of the snippet comes before the first matching word.
const SNIPPET_LEAD: usize = 50;

const TITLE_WEIGHT: f64 = 3.0;
const TAG_WEIGHT: f64 = 2.0;
const TEXT_WEIGHT: f64 = 1.0;
const PREFIX_FACTOR: f64 = 0.5;

/// Words too common to say anything about a note.
const STOP_WORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "for", "from", "how", "i", "in",
    "is", "it", "me", "my", "of", "on", "or", "that", "the", "this", "to", "what", "with",
];

/// One note.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Note {
    /// A URI-safe slug, unique among the notes.
    pub id: String,
    /// A short title.
    pub title: String,
    /// Lowercase topics.
    pub tags: Vec<String>,
    /// The note itself, a paragraph.
    pub text: String,
}

impl Note {
    /// Its resource URI.
    pub fn uri(&self) -> String {
        format!("{NOTE_URI_PREFIX}{}", self.id)
    }

    /// The note as Markdown, as `resources/read` and the prompt give it.
    pub fn markdown(&self) -> String {
        format!(
            "# {}\n\nTags: {}\n\n{}\n",
            self.title,
            self.tags.join(", "),
            self.text
        )
    }
}

/// The prefix of every note's URI; the id follows.
pub const NOTE_URI_PREFIX: &str = "notes://note/";
/// The URI of the list of all notes.
pub const INDEX_URI: &str = "notes://index";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotesFile {
    notes: Vec<Note>,
}

static NOTES: LazyLock<Vec<Note>> = LazyLock::new(|| {
    match toml::from_str::<NotesFile>(include_str!("notes.toml")) {
        Ok(file) => file.notes,
        Err(error) => {
            // The file is part of the binary and a unit test reads it; this is a build mistake.
            tracing::error!(%error, "the demo notes do not parse");
            Vec::new()
        }
    }
});

/// Every note, in the order of the file.
pub fn all() -> &'static [Note] {
    &NOTES
}

/// The note a `notes://note/<id>` URI names.
pub fn by_uri(uri: &str) -> Option<&'static Note> {
    let id = uri.strip_prefix(NOTE_URI_PREFIX)?;
    all().iter().find(|note| note.id == id)
}

/// The index resource: one line per note, as Markdown.
pub fn index_markdown() -> String {
    let mut text = String::from("# Notes\n\n");
    for note in all() {
        text.push_str(&format!(
            "- [{}]({}) ({})\n",
            note.title,
            note.uri(),
            note.tags.join(", ")
        ));
    }
    text
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Hit {
    /// The note's id.
    pub id: String,
    /// The note's title.
    pub title: String,
    /// The note's resource URI, to read it whole.
    pub uri: String,
    /// The part of the note around the first matching word.
    pub snippet: String,
    /// The relevance score (higher is better; only comparable within one search).
    pub score: f64,
}

/// Lowercase words of `text`, without punctuation.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The distinct meaningful words of a query, in order.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    words(query)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .filter(|w| seen.insert(w.clone()))
        .collect()
}

/// How well `word` (from a note) matches the query word `term`.
fn matches(word: &str, term: &str) -> f64 {
    if word == term {
        1.0
    } else if term.chars().count() >= 3 && word.starts_with(term) {
        PREFIX_FACTOR
    } else {
        0.0
    }
}

fn count(field: &[String], term: &str) -> f64 {
    field.iter().map(|word| matches(word, term)).sum()
}

struct Indexed {
    title: Vec<String>,
    tags: Vec<String>,
    text: Vec<String>,
}

impl Indexed {
    fn new(note: &Note) -> Self {
        Indexed {
            title: words(&note.title).collect(),
            tags: note.tags.iter().flat_map(|t| words(t)).collect(),
            text: words(&note.text).collect(),
        }
    }

    fn weight(&self, term: &str) -> f64 {
        TITLE_WEIGHT * count(&self.title, term)
            + TAG_WEIGHT * count(&self.tags, term)
            + TEXT_WEIGHT * count(&self.text, term)
    }
}

/// The notes matching `query`, best first, at most `limit` of them.
pub fn search(query: &str, limit: usize) -> Vec<Hit> {
    let terms = query_terms(query);
    let notes = all();
    let indexed: Vec<Indexed> = notes.iter().map(Indexed::new).collect();
    // A word found in every note tells them apart less than one found in a single note.
    let rarity: Vec<f64> = terms
        .iter()
        .map(|term| {
            let containing = indexed.iter().filter(|n| n.weight(term) > 0.0).count();
            (1.0 + notes.len() as f64 / (1.0 + containing as f64)).ln()
        })
        .collect();
    let mut hits: Vec<(f64, &Note)> = notes
        .iter()
        .zip(&indexed)
        .map(|(note, index)| {
            let score = terms
                .iter()
                .zip(&rarity)
                .map(|(term, rarity)| rarity * index.weight(term))
                .sum::<f64>();
            (score, note)
        })
        .filter(|(score, _)| *score > 0.0)
        .collect();
    hits.sort_by(|(a, x), (b, y)| b.total_cmp(a).then_with(|| x.id.cmp(&y.id)));
    hits.into_iter()
        .take(limit.clamp(1, MAX_LIMIT))
        .map(|(score, note)| Hit {
            id: note.id.clone(),
            title: note.title.clone(),
            uri: note.uri(),
            snippet: snippet(&note.text, &terms),
            // Two decimals: enough to compare, and stable to print.
            score: (score * 100.0).round() / 100.0,
        })
        .collect()
}

/// About [`SNIPPET_CHARS`] characters of `text` around its first word matching a term, cut at
/// spaces, with `…` where text was left out.
fn snippet(text: &str, terms: &[String]) -> String {
    let chars: Vec<char> = text.chars().collect();
    // Character index of the first matching word (0 when only the title or tags matched).
    let mut first = 0;
    let mut start = None;
    // One step past the end, so that a word ending the text is looked at too.
    for i in 0..=chars.len() {
        let in_word = chars.get(i).is_some_and(|c| c.is_alphanumeric());
        match (in_word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let word: String = chars[s..i].iter().collect::<String>().to_lowercase();
                if terms.iter().any(|t| matches(&word, t) > 0.0) {
                    first = s;
                    break;
                }
                start = None;
            }
            _ => {}
        }
    }
    let mut from = first.saturating_sub(SNIPPET_LEAD);
    if from > 0 {
        // Start at a word.
        while from < first && !chars[from - 1].is_whitespace() {
            from += 1;
        }
    }
    let mut to = (from + SNIPPET_CHARS).min(chars.len());
    if to < chars.len() {
        // End at a word.
        while to > first + 1 && !chars[to].is_whitespace() {
            to -= 1;
        }
    }
    let body: String = chars[from..to].iter().collect();
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    out.push_str(body.trim());
    if to < chars.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(query: &str, limit: usize) -> Vec<String> {
        search(query, limit).into_iter().map(|h| h.id).collect()
    }

    #[test]
    fn the_embedded_notes_parse_with_unique_uri_safe_ids() {
        let notes = all();
        assert!((15..=25).contains(&notes.len()), "{}", notes.len());
        let mut seen = HashSet::new();
        for note in notes {
            assert!(seen.insert(&note.id), "duplicate id {}", note.id);
            assert!(
                note.id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}",
                note.id
            );
            assert!(!note.title.is_empty() && !note.text.is_empty() && !note.tags.is_empty());
            assert!(!note.text.contains('\n'), "{}: one paragraph", note.id);
            assert_eq!(by_uri(&note.uri()).map(|n| &n.id), Some(&note.id));
        }
        assert!(by_uri("notes://note/nope").is_none());
        assert!(by_uri("rust-errors").is_none());
    }

    #[test]
    fn titles_and_tags_outrank_passing_mentions() {
        // Six notes mention Rust: in the title, tags and text; only in the tags
        // (cargo-workspaces); only once in passing (wasm-basics).
        let found = ids("rust", 20);
        assert_eq!(found.len(), 6, "{found:?}");
        assert_eq!(found[0], "rust-ownership", "{found:?}");
        assert_eq!(found[4..], ["cargo-workspaces", "wasm-basics"], "{found:?}");
        assert_eq!(ids("rust", 3), found[..3]);
        assert_eq!(ids("risotto", 5), ["risotto"]);
    }

    #[test]
    fn rare_words_weigh_more_and_every_word_counts() {
        assert_eq!(ids("sourdough starter", 1), ["sourdough"]);
        // "mcp" narrows "transports" to the one note that has both.
        assert_eq!(ids("mcp transports stdio", 1), ["mcp-transports"]);
        assert_eq!(ids("jet lag flight", 1), ["jet-lag"]);
    }

    #[test]
    fn words_match_case_insensitively_and_by_prefix() {
        assert_eq!(ids("WebAssembly", 20), ids("webassembly", 20));
        let cooking = ids("cook", 20);
        assert!(cooking.contains(&"risotto".to_owned()), "{cooking:?}");
        // Two letters are too few to match by prefix.
        assert!(ids("co", 20).is_empty());
    }

    #[test]
    fn stop_words_punctuation_and_unknown_words_find_nothing() {
        assert!(query_terms("what is the, and?").is_empty());
        assert!(ids("what is the", 5).is_empty());
        assert!(ids("zyzzyva", 5).is_empty());
        assert_eq!(query_terms("Rust, rust & WASM!"), ["rust", "wasm"]);
    }

    #[test]
    fn ties_are_broken_by_id_and_limits_are_clamped() {
        let first = search("travel", 20);
        assert_eq!(first, search("travel", 20));
        assert!(first.windows(2).all(|w| w[0].score > w[1].score
            || (w[0].score == w[1].score && w[0].id < w[1].id)));
        assert_eq!(search("travel", 0).len(), 1);
        assert!(search("a e i o u s t", 1000).len() <= MAX_LIMIT);
    }

    #[test]
    fn snippets_show_the_first_match_cut_at_words() {
        let text = |id: &str| all().iter().find(|n| n.id == id).map(|n| n.text.clone());
        // Near the end of the note: cut before, not after.
        let hit = &search("parmesan", 1)[0];
        assert_eq!(hit.id, "risotto");
        assert!(hit.snippet.starts_with('…'), "{}", hit.snippet);
        assert!(hit.snippet.contains("parmesan"), "{}", hit.snippet);
        let risotto = text("risotto").unwrap();
        assert!(
            risotto.ends_with(hit.snippet.trim_start_matches('…')),
            "{}",
            hit.snippet
        );
        // Near the start: cut after, at a word.
        let hit = &search("arborio", 1)[0];
        assert!(
            hit.snippet.ends_with('…') && !hit.snippet.starts_with('…'),
            "{}",
            hit.snippet
        );
        let body = hit.snippet.trim_end_matches('…');
        assert!(risotto.starts_with(body), "{}", hit.snippet);
        assert_eq!(
            risotto[body.len()..].chars().next(),
            Some(' '),
            "{}",
            hit.snippet
        );
        assert!(body.chars().count() <= SNIPPET_CHARS, "{}", hit.snippet);
        // A title-only match shows the start of the text.
        let hit = &search("reliable", 1)[0];
        assert!(hit.snippet.starts_with("Toast"), "{}", hit.snippet);
        // A match in the last word of the text is found too.
        let hit = &search("twinkle", 1)[0];
        assert!(hit.snippet.ends_with("twinkle."), "{}", hit.snippet);
    }
}
