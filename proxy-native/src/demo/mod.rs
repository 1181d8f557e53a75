//! The built-in demo MCP server (`transport = "builtin"`, `server = "demo"`): something real to
//! try without installing anything, written with rmcp's server macros and run in the proxy's
//! process.
//!
//! - Tools: `now` (the current time, in UTC or at a fixed offset), `calculate` (arithmetic),
//!   `search_notes` (a small embedded set of notes). A tool that cannot do what it was asked
//!   answers a result with `isError: true` and a message a model can act on.
//! - Resources: `notes://index` (the list) and `notes://note/<id>` (each note, also offered as
//!   the template `notes://note/{id}`).
//! - Prompt: `summarize_notes {topic}`, a user message carrying the matching notes.
//!
//! The pool reaches it over an in-memory pipe (`mcp/upstream/builtin.rs`), and with
//! `serve_http = true` clients reach it at `/mcp/<name>` (`routes/builtin_mcp.rs`).

mod calculator;
mod clock;
mod notes;

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, GetPromptResult, Implementation, ListResourceTemplatesResult,
    ListResourcesResult, PaginatedRequestParams, PromptMessage, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ResourceTemplate, Role,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData, RoleServer, ServerHandler, prompt, prompt_handler, prompt_router, schemars, tool,
    tool_handler, tool_router,
};
use serde::{Deserialize, Serialize};
use switchyard_shared::error::truncate;

use self::clock::Now;
use self::notes::Hit;

const MARKDOWN: &str = "text/markdown";
/// Notes a `summarize_notes` prompt carries at most.
const PROMPT_NOTES: usize = 5;

/// The demo server; cheap to create, one per session.
#[derive(Debug, Clone)]
pub struct DemoServer {
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

impl Default for DemoServer {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NowArgs {
    /// "UTC" (the default) or a fixed offset from UTC written ±HH:MM, such as "+02:00" or
    /// "-05:30". Named zones such as "Europe/Paris" are not supported.
    #[serde(default)]
    timezone: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CalculateArgs {
    /// The expression, e.g. "12*(3+4)" or "2^10 / (1.5 - 0.25)". Numbers (with optional
    /// decimals), + - * / % (remainder) ^ (power), parentheses and unary minus; no variables or
    /// functions. At most 1000 characters.
    expression: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
struct Calculation {
    /// The expression as given.
    expression: String,
    /// Its value.
    value: f64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    /// Words to look for in the notes' titles, tags and text, e.g. "rust async" or "bread".
    query: String,
    /// How many notes to return at most, 1 to 20; 5 when omitted.
    #[serde(default)]
    #[schemars(range(min = 1, max = 20))]
    limit: Option<u32>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
struct SearchResults {
    /// The query as given.
    query: String,
    /// The matching notes, best first.
    results: Vec<Hit>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SummarizeArgs {
    /// The topic, e.g. "rust", "cooking" or "travel"; the notes that match it best are included.
    topic: String,
}

/// A successful result with `text` for people and models and `value` as structured content.
fn structured<T: Serialize>(text: String, value: &T) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = serde_json::to_value(value).ok();
    result
}

fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

#[tool_router]
impl DemoServer {
    /// A server with the demo's tools and prompt.
    pub fn new() -> Self {
        DemoServer {
            tool_router: Self::tool_router(),
            prompt_router: Self::prompt_router(),
        }
    }

    #[tool(
        name = "now",
        title = "Current date and time",
        description = "Get the current date and time as RFC 3339 (e.g. 2026-05-05T14:03:07+02:00) \
            together with the day of the week. Use it whenever an answer depends on today's date \
            or the time of day. Optional `timezone`: \"UTC\" (default) or a fixed UTC offset such \
            as \"+02:00\".",
        annotations(read_only_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<Now>()
    )]
    fn now(&self, Parameters(NowArgs { timezone }): Parameters<NowArgs>) -> CallToolResult {
        match clock::parse_timezone(timezone.as_deref().unwrap_or("UTC")) {
            Ok(offset) => {
                let now = clock::describe(chrono::Utc::now(), offset);
                structured(now.text(), &now)
            }
            Err(message) => tool_error(message),
        }
    }

    #[tool(
        name = "calculate",
        title = "Calculator",
        description = "Evaluate an arithmetic expression and return its exact value. Supports \
            + - * / % (remainder) ^ (power, right-associative), parentheses, unary minus and \
            decimals, e.g. \"12*(3+4)\". Use it instead of doing arithmetic yourself. A malformed \
            expression or a division by zero returns an error message saying what is wrong.",
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<Calculation>()
    )]
    fn calculate(
        &self,
        Parameters(CalculateArgs { expression }): Parameters<CalculateArgs>,
    ) -> CallToolResult {
        match calculator::evaluate(&expression) {
            Ok(value) => {
                let text = format!(
                    "{} = {}",
                    expression.trim(),
                    calculator::format_number(value)
                );
                structured(text, &Calculation { expression, value })
            }
            Err(error) => tool_error(format!("cannot evaluate the expression: {error}")),
        }
    }

    #[tool(
        name = "search_notes",
        title = "Search notes",
        description = "Search a small collection of notes (about Rust, WebAssembly, the Model \
            Context Protocol, cooking, coffee, travel, gardening, running and the night sky) \
            and return the best matches, each with its id, title, a snippet and the resource URI \
            notes://note/<id> that holds the whole note.",
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<SearchResults>()
    )]
    fn search_notes(
        &self,
        Parameters(SearchArgs { query, limit }): Parameters<SearchArgs>,
    ) -> CallToolResult {
        if query.chars().count() > notes::MAX_QUERY_LENGTH {
            return tool_error(format!(
                "the query is too long; at most {} characters are accepted",
                notes::MAX_QUERY_LENGTH
            ));
        }
        if notes::query_terms(&query).is_empty() {
            return tool_error(
                "the query has no words to search for; try a topic such as \"rust\" or \"bread\"",
            );
        }
        let limit = limit.map_or(notes::DEFAULT_LIMIT, |l| l as usize);
        let results = notes::search(&query, limit);
        let text = if results.is_empty() {
            format!("No notes match {query:?}.")
        } else {
            let mut text = format!("{} notes match {query:?}:\n", results.len());
            for (i, hit) in results.iter().enumerate() {
                text.push_str(&format!(
                    "{}. {} [{}] {}\n   {}\n",
                    i + 1,
                    hit.title,
                    hit.id,
                    hit.uri,
                    hit.snippet
                ));
            }
            text
        };
        structured(text, &SearchResults { query, results })
    }
}

#[prompt_router]
impl DemoServer {
    #[prompt(
        name = "summarize_notes",
        description = "Ask for a short summary of what the notes say about a topic; the \
            matching notes are included in the message."
    )]
    fn summarize_notes(
        &self,
        Parameters(SummarizeArgs { topic }): Parameters<SummarizeArgs>,
    ) -> Result<GetPromptResult, ErrorData> {
        if topic.chars().count() > notes::MAX_QUERY_LENGTH {
            return Err(ErrorData::invalid_params(
                format!(
                    "the topic is too long; at most {} characters are accepted",
                    notes::MAX_QUERY_LENGTH
                ),
                None,
            ));
        }
        let hits = notes::search(&topic, PROMPT_NOTES);
        if hits.is_empty() {
            let mut tags: Vec<&str> = notes::all()
                .iter()
                .flat_map(|n| n.tags.iter().map(String::as_str))
                .collect();
            tags.sort_unstable();
            tags.dedup();
            return Err(ErrorData::invalid_params(
                format!(
                    "no note matches the topic {:?}; try one of: {}",
                    truncate(&topic, 100),
                    tags.join(", ")
                ),
                None,
            ));
        }
        let mut text = format!(
            "Summarize what the following notes say about \"{}\" in a few sentences, naming \
             the notes you draw on by their titles.\n",
            topic.trim()
        );
        for hit in &hits {
            if let Some(note) = notes::by_uri(&hit.uri) {
                text.push_str("\n---\n\n");
                text.push_str(&note.markdown());
            }
        }
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                .with_description(format!("Summarize the notes about {}", topic.trim())),
        )
    }
}

fn index_resource() -> Resource {
    Resource::new(notes::INDEX_URI, "notes-index")
        .with_title("All notes")
        .with_description("The list of every note, with its title, URI and tags")
        .with_mime_type(MARKDOWN)
}

fn note_resource(note: &notes::Note) -> Resource {
    Resource::new(note.uri(), note.id.clone())
        .with_title(note.title.clone())
        .with_description(format!("A note about {}", note.tags.join(", ")))
        .with_mime_type(MARKDOWN)
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(
            Implementation::new("switchyard-demo", env!("CARGO_PKG_VERSION"))
                .with_title("Switchyard demo server"),
        )
        .with_instructions(
            "A demo server built into the Switchyard proxy. Use `now` for the date and time, \
             `calculate` for arithmetic and `search_notes` to find notes; read a whole note as \
             the resource notes://note/<id>.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let resources = std::iter::once(index_resource())
            .chain(notes::all().iter().map(note_resource))
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let template = ResourceTemplate::new(format!("{}{{id}}", notes::NOTE_URI_PREFIX), "note")
            .with_title("A note by id")
            .with_description("One note; the ids are listed in notes://index")
            .with_mime_type(MARKDOWN);
        Ok(ListResourceTemplatesResult::with_all_items(vec![template]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let text = if request.uri == notes::INDEX_URI {
            notes::index_markdown()
        } else if let Some(note) = notes::by_uri(&request.uri) {
            note.markdown()
        } else {
            return Err(ErrorData::resource_not_found(
                format!(
                    "no resource {:?}; the notes are listed in {}",
                    truncate(&request.uri, 200),
                    notes::INDEX_URI
                ),
                None,
            ));
        };
        Ok(ReadResourceResponse::Complete(ReadResourceResult::new(
            vec![ResourceContents::text(text, request.uri).with_mime_type(MARKDOWN)],
        )))
    }
}
