//! Scopes: which models and which MCP tools a caller may use, as lists of globs.
//!
//! A pattern has two parts split at the first `/`, matched separately: `"<provider>/<model>"` for
//! models and `"<server>/<tool>"` for MCP tools (`"openai/*"`, `"mock/demo"`, `"demo/*"`,
//! `"everything/echo"`); `"*"` alone allows everything of its kind. Splitting first means a
//! pattern's provider part can never reach into another provider's models, whatever `*` matches
//! (model names may contain `/`, provider and server names may not). Globs are `globset`'s:
//! `*`, `?`, `[abc]`, `{a,b}`; matching is case-sensitive, as names are.
//!
//! A caller may use an MCP server (list it, and read its resources and prompts) when at least one
//! of its tool patterns names that server; each tool is then checked on its own.

use globset::{GlobBuilder, GlobMatcher};
use rmcp::model::ListToolsResult;
use serde::{Deserialize, Deserializer};
use switchyard_shared::error::truncate;
use switchyard_shared::mcp::McpServerList;
use switchyard_shared::{ApiError, ErrorCode, ModelId, ModelList};

/// One `"<owner>/<item>"` glob of a scope list.
#[derive(Debug, Clone)]
pub struct ScopePattern {
    text: String,
    owner: GlobMatcher,
    item: GlobMatcher,
    /// The item part is `*`: every model of the provider, every tool of the server.
    any_item: bool,
}

/// What a scope list is about, for its error messages.
#[derive(Debug, Clone, Copy)]
enum ScopeKind {
    Models,
    Tools,
}

impl ScopeKind {
    fn form(self) -> &'static str {
        match self {
            ScopeKind::Models => "\"<provider>/<model>\", e.g. \"openai/*\" or \"mock/demo\"",
            ScopeKind::Tools => "\"<server>/<tool>\", e.g. \"demo/*\" or \"everything/echo\"",
        }
    }
}

impl ScopePattern {
    fn parse(text: &str, kind: ScopeKind) -> Result<Self, String> {
        let (owner, item) = if text == "*" {
            ("*", "*")
        } else {
            match text.split_once('/') {
                Some((owner, item)) if !owner.is_empty() && !item.is_empty() => (owner, item),
                _ => {
                    return Err(format!(
                        "{text:?} is not a scope: write {} (\"*\" alone allows all)",
                        kind.form()
                    ));
                }
            }
        };
        let glob = |part: &str| {
            GlobBuilder::new(part)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("{text:?} is not a valid glob: {}", e.kind()))
        };
        Ok(ScopePattern {
            text: text.to_owned(),
            owner: glob(owner)?,
            item: glob(item)?,
            any_item: item == "*",
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn matches(&self, owner: &str, item: &str) -> bool {
        self.owner.is_match(owner) && self.item.is_match(item)
    }

    /// The pattern's two parts as written.
    fn parts(&self) -> (&str, &str) {
        self.text.split_once('/').unwrap_or(("*", "*"))
    }

    /// Whether everything `narrower` allows, this pattern allows too. Deciding this for any
    /// two globs is hard, so it is decided part by part, conservatively: a part is within when
    /// this part is `*`, both are the same text, or the narrower part is a plain name this
    /// part matches. A glob that is narrower in a way this cannot see is refused, never let
    /// through.
    fn covers(&self, narrower: &ScopePattern) -> bool {
        let (owner, item) = self.parts();
        let (n_owner, n_item) = narrower.parts();
        let within = |part: &str, matcher: &GlobMatcher, n_part: &str| {
            part == "*" || part == n_part || (is_plain(n_part) && matcher.is_match(n_part))
        };
        within(owner, &self.owner, n_owner) && within(item, &self.item, n_item)
    }
}

/// A part without glob syntax: it names one thing.
fn is_plain(part: &str) -> bool {
    !part.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// A `"<provider>/<model>"` pattern of a `models` list, checked when the configuration is read.
#[derive(Debug, Clone)]
pub struct ModelPattern(pub ScopePattern);

/// A `"<server>/<tool>"` pattern of an `mcp` list, checked when the configuration is read.
#[derive(Debug, Clone)]
pub struct ToolPattern(pub ScopePattern);

impl<'de> Deserialize<'de> for ModelPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ScopePattern::parse(&text, ScopeKind::Models)
            .map(ModelPattern)
            .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ToolPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ScopePattern::parse(&text, ScopeKind::Tools)
            .map(ToolPattern)
            .map_err(serde::de::Error::custom)
    }
}

/// Which models and which MCP tools a caller may use.
#[derive(Debug, Clone)]
pub struct Scopes {
    models: Vec<ScopePattern>,
    tools: Vec<ScopePattern>,
}

impl Scopes {
    /// Everything: the scopes of every request when no authentication is configured.
    pub fn all() -> Self {
        let all = |kind| vec![ScopePattern::parse("*", kind).expect("\"*\" is a valid scope")];
        Scopes {
            models: all(ScopeKind::Models),
            tools: all(ScopeKind::Tools),
        }
    }

    /// Nothing: what a request to a public path (`/healthz`) carries when authentication is on.
    pub fn none() -> Self {
        Scopes {
            models: Vec::new(),
            tools: Vec::new(),
        }
    }

    /// The scopes of a configured `models` and `mcp` list.
    pub fn new(models: &[ModelPattern], tools: &[ToolPattern]) -> Self {
        Scopes {
            models: models.iter().map(|p| p.0.clone()).collect(),
            tools: tools.iter().map(|p| p.0.clone()).collect(),
        }
    }

    /// The scopes of `models` and `mcp` pattern texts (a minted token's), or why one is not a
    /// scope.
    pub fn parse(models: &[String], mcp: &[String]) -> Result<Self, String> {
        Ok(Scopes {
            models: models
                .iter()
                .map(|m| ScopePattern::parse(m, ScopeKind::Models))
                .collect::<Result<_, _>>()?,
            tools: mcp
                .iter()
                .map(|t| ScopePattern::parse(t, ScopeKind::Tools))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The model patterns as written.
    pub fn model_patterns(&self) -> Vec<String> {
        self.models.iter().map(|p| p.text.clone()).collect()
    }

    /// The MCP tool patterns as written.
    pub fn tool_patterns(&self) -> Vec<String> {
        self.tools.iter().map(|p| p.text.clone()).collect()
    }

    /// The first pattern of `narrower` that these scopes do not cover (see
    /// [`ScopePattern::covers`]), as written; `None` when `narrower` is within them.
    pub fn first_outside<'a>(&self, narrower: &'a Scopes) -> Option<&'a str> {
        let outside = |mine: &[ScopePattern], theirs: &'a [ScopePattern]| {
            theirs
                .iter()
                .find(|n| !mine.iter().any(|p| p.covers(n)))
                .map(ScopePattern::as_str)
        };
        outside(&self.models, &narrower.models).or_else(|| outside(&self.tools, &narrower.tools))
    }

    /// Whether the caller may use `model` of `provider`.
    pub fn may_use_model(&self, provider: &str, model: &str) -> bool {
        self.models.iter().any(|p| p.matches(provider, model))
    }

    /// Whether the caller may use some model of `provider`.
    pub fn may_use_provider(&self, provider: &str) -> bool {
        self.models.iter().any(|p| p.owner.is_match(provider))
    }

    /// Whether the caller may use every model of `provider`, so that its lists need no
    /// filtering.
    pub fn may_use_every_model(&self, provider: &str) -> bool {
        self.models
            .iter()
            .any(|p| p.any_item && p.owner.is_match(provider))
    }

    /// Whether the caller may use the MCP server `server` (some tool of it).
    pub fn may_use_server(&self, server: &str) -> bool {
        self.tools.iter().any(|p| p.owner.is_match(server))
    }

    /// Whether the caller may call `tool` of `server`.
    pub fn may_use_tool(&self, server: &str, tool: &str) -> bool {
        self.tools.iter().any(|p| p.matches(server, tool))
    }

    /// Whether the caller may call every tool of `server`, so that its tool lists need no
    /// filtering.
    pub fn may_use_every_tool(&self, server: &str) -> bool {
        self.tools
            .iter()
            .any(|p| p.any_item && p.owner.is_match(server))
    }

    /// `403 forbidden` unless the caller may use the model `id` (`"<provider>/<model>"`); a
    /// malformed id is the route table's `400`, as it would be without scopes.
    pub fn check_model(&self, id: &str) -> Result<(), ApiError> {
        let ModelId { provider, model } = ModelId::parse(id)?;
        self.check_model_of(provider, model)
    }

    /// `403 forbidden` unless the caller may use `model` of `provider`.
    pub fn check_model_of(&self, provider: &str, model: &str) -> Result<(), ApiError> {
        if self.may_use_model(provider, model) {
            return Ok(());
        }
        Err(forbidden(format!(
            "the model \"{}/{}\" is outside this caller's scopes",
            truncate(provider, 100),
            truncate(model, 200)
        )))
    }

    /// `403 forbidden` unless the caller may use some model of `provider`.
    pub fn check_provider(&self, provider: &str) -> Result<(), ApiError> {
        if self.may_use_provider(provider) {
            return Ok(());
        }
        Err(forbidden(format!(
            "the provider \"{}\" is outside this caller's scopes",
            truncate(provider, 100)
        )))
    }

    /// `403 forbidden` unless the caller may use the MCP server `server`.
    pub fn check_server(&self, server: &str) -> Result<(), ApiError> {
        if self.may_use_server(server) {
            return Ok(());
        }
        Err(forbidden(format!(
            "the MCP server \"{}\" is outside this caller's scopes",
            truncate(server, 100)
        )))
    }

    /// `403 forbidden` unless the caller may call `tool` of `server`.
    pub fn check_tool(&self, server: &str, tool: &str) -> Result<(), ApiError> {
        if self.may_use_tool(server, tool) {
            return Ok(());
        }
        Err(forbidden(format!(
            "the tool \"{}\" of MCP server \"{}\" is outside this caller's scopes",
            truncate(tool, 200),
            truncate(server, 100)
        )))
    }

    /// `list` less the providers and models the caller may not use.
    pub fn filter_models(&self, list: &ModelList) -> ModelList {
        let providers = list
            .providers
            .iter()
            .filter(|p| self.may_use_provider(&p.name))
            .map(|p| {
                let mut p = p.clone();
                p.models.retain(|id| {
                    // Listed ids are `"<provider>/<model>"`.
                    ModelId::parse(id).is_ok_and(|m| self.may_use_model(m.provider, m.model))
                });
                p
            })
            .collect();
        ModelList { providers }
    }

    /// `list` less the MCP servers the caller may not use.
    pub fn filter_servers(&self, list: &McpServerList) -> McpServerList {
        McpServerList {
            servers: list
                .servers
                .iter()
                .filter(|s| self.may_use_server(&s.name))
                .cloned()
                .collect(),
        }
    }

    /// Removes from a page of `server`'s tools those the caller may not call.
    pub fn filter_tools(&self, server: &str, page: &mut ListToolsResult) {
        if !self.may_use_every_tool(server) {
            page.tools.retain(|t| self.may_use_tool(server, &t.name));
        }
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(models: &[&str], tools: &[&str]) -> Scopes {
        Scopes {
            models: models
                .iter()
                .map(|m| ScopePattern::parse(m, ScopeKind::Models).unwrap())
                .collect(),
            tools: tools
                .iter()
                .map(|t| ScopePattern::parse(t, ScopeKind::Tools).unwrap())
                .collect(),
        }
    }

    #[test]
    fn model_globs_match_provider_and_model_apart() {
        let s = scopes(
            &[
                "openai/*",
                "mock/demo",
                "ollama/llama3.*",
                "open*/gpt-{4o,5}",
            ],
            &[],
        );
        assert!(s.may_use_model("openai", "gpt-4.1-mini"));
        assert!(s.may_use_model("mock", "demo"));
        assert!(!s.may_use_model("mock", "demo2"));
        assert!(!s.may_use_model("mock", "other"));
        assert!(s.may_use_model("ollama", "llama3.2:latest"));
        assert!(!s.may_use_model("ollama", "qwen3:4b"));
        assert!(s.may_use_model("openrouter", "gpt-4o"));
        assert!(!s.may_use_model("openrouter", "gpt-4.1"));
        // A model name with a slash stays in its provider.
        let s = scopes(&["openrouter/meta-llama/*"], &[]);
        assert!(s.may_use_model("openrouter", "meta-llama/llama-3-8b"));
        assert!(!s.may_use_model("openrouter", "openai/gpt-4o"));
        // A provider part cannot reach into another provider through `*`.
        let s = scopes(&["mock*/x"], &[]);
        assert!(!s.may_use_model("mock", "y/x"));
        assert!(s.may_use_provider("mock"));
        assert!(!s.may_use_provider("openai"));
        // Names are case-sensitive.
        assert!(!scopes(&["Mock/demo"], &[]).may_use_model("mock", "demo"));
    }

    #[test]
    fn tool_globs_give_servers_and_tools() {
        let s = scopes(&[], &["demo/*", "everything/echo", "fs/read_*"]);
        assert!(s.may_use_server("demo") && s.may_use_every_tool("demo"));
        assert!(s.may_use_tool("demo", "calculate"));
        assert!(s.may_use_server("everything") && !s.may_use_every_tool("everything"));
        assert!(s.may_use_tool("everything", "echo"));
        assert!(!s.may_use_tool("everything", "add"));
        assert!(s.may_use_tool("fs", "read_file"));
        assert!(!s.may_use_tool("fs", "write_file"));
        assert!(!s.may_use_server("secret"));
        assert!(!s.may_use_tool("secret", "echo"));
    }

    #[test]
    fn all_and_none() {
        let all = Scopes::all();
        assert!(all.may_use_model("any", "thing/at/all"));
        assert!(all.may_use_every_tool("x") && all.may_use_tool("x", "y"));
        let none = Scopes::none();
        assert!(!none.may_use_provider("mock") && !none.may_use_server("demo"));
    }

    #[test]
    fn refusals_are_forbidden_and_name_what_was_refused() {
        let s = scopes(&["mock/demo"], &["demo/now"]);
        assert!(s.check_model("mock/demo").is_ok());
        let e = s.check_model("openai/gpt-4o").unwrap_err();
        assert_eq!((e.code, e.http_status()), (ErrorCode::Forbidden, 403));
        assert!(e.message.contains("\"openai/gpt-4o\""), "{}", e.message);
        let e = s.check_model("no-slash").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = s.check_tool("demo", "calculate").unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.message.contains("\"calculate\"") && e.message.contains("\"demo\""));
        let e = s.check_server("files").unwrap_err();
        assert!(e.message.contains("\"files\""), "{}", e.message);
        assert!(s.check_server("demo").is_ok());
    }

    #[test]
    fn malformed_patterns_are_explained() {
        for (text, kind, says) in [
            ("openai", ScopeKind::Models, "<provider>/<model>"),
            ("/x", ScopeKind::Models, "<provider>/<model>"),
            ("x/", ScopeKind::Tools, "<server>/<tool>"),
            ("", ScopeKind::Tools, "<server>/<tool>"),
            ("demo/[a", ScopeKind::Tools, "not a valid glob"),
            ("{a/b", ScopeKind::Models, "not a valid glob"),
        ] {
            let problem = ScopePattern::parse(text, kind).unwrap_err();
            assert!(problem.contains(says), "{text}: {problem}");
        }
    }

    #[test]
    fn narrower_scopes_are_told_from_wider_ones() {
        let caller = scopes(&["mock/*", "fake/echo"], &["demo/*", "everything/echo"]);
        for within in [
            scopes(&["mock/*"], &[]),
            scopes(&["mock/demo", "fake/echo"], &["demo/calculate"]),
            scopes(&[], &["everything/echo", "demo/note*"]),
            scopes(&[], &[]),
        ] {
            assert_eq!(caller.first_outside(&within), None, "{within:?}");
        }
        for (wider, named) in [
            (scopes(&["*"], &[]), "*"),
            (
                scopes(&["mock/demo", "openai/gpt-4o"], &[]),
                "openai/gpt-4o",
            ),
            (scopes(&["fake/*"], &[]), "fake/*"),
            (scopes(&["mo*/demo"], &[]), "mo*/demo"),
            (scopes(&[], &["everything/*"]), "everything/*"),
            (scopes(&[], &["demo/*", "secret/read"]), "secret/read"),
        ] {
            assert_eq!(caller.first_outside(&wider), Some(named));
        }
        assert_eq!(Scopes::all().first_outside(&caller), None);
        assert!(Scopes::none().first_outside(&caller).is_some());
    }

    #[test]
    fn lists_are_filtered() {
        use switchyard_shared::ProviderInfo;
        use switchyard_shared::ProviderKind;
        let list = ModelList {
            providers: vec![
                ProviderInfo {
                    name: "mock".into(),
                    kind: ProviderKind::OpenAi,
                    models: vec!["mock/demo".into(), "mock/other".into()],
                },
                ProviderInfo {
                    name: "openai".into(),
                    kind: ProviderKind::OpenAi,
                    models: vec!["openai/gpt-4o".into()],
                },
            ],
        };
        let filtered = scopes(&["mock/demo"], &[]).filter_models(&list);
        assert_eq!(filtered.providers.len(), 1);
        assert_eq!(filtered.providers[0].models, vec!["mock/demo".to_owned()]);
        assert_eq!(Scopes::all().filter_models(&list), list);
    }
}
