//! How the MCP gateway (`/mcp`) names what several servers offer as one server: a tool or prompt
//! `echo` of server `everything` is `everything__echo`, and a resource `test://static/1` of that
//! server is `switchyard://everything/test://static/1`. Each name is split back into the server
//! and the server's own name when the client uses it.
//!
//! `__` keeps names within the characters model APIs accept for function names
//! (`[A-Za-z0-9_-]`), which a `.` or `/` would not. Server names may not contain `__` nor end
//! with `_` (the proxy's configuration refuses them, see [`is_gateway_server_name`]), so the first
//! `__` of a name always ends the server's part, whatever the server's own name contains.

/// Between the server's name and the tool's or prompt's own name.
pub const SEPARATOR: &str = "__";

/// The scheme of a gateway resource URI; the server's name is its authority.
pub const RESOURCE_SCHEME: &str = "switchyard";

/// Whether names of `server`'s tools split back into `server`: no `__` in it, no `_` at its end.
pub fn is_gateway_server_name(server: &str) -> bool {
    !server.contains(SEPARATOR) && !server.ends_with('_')
}

/// The gateway's name for `server`'s tool or prompt `name`.
pub fn qualify(server: &str, name: &str) -> String {
    let mut qualified = String::with_capacity(server.len() + SEPARATOR.len() + name.len());
    qualified.push_str(server);
    qualified.push_str(SEPARATOR);
    qualified.push_str(name);
    qualified
}

/// The server and the server's own name of a gateway tool or prompt name, or `None` when it is
/// not one (no separator, or an empty part).
pub fn split(qualified: &str) -> Option<(&str, &str)> {
    let (server, name) = qualified.split_once(SEPARATOR)?;
    (!server.is_empty() && !name.is_empty()).then_some((server, name))
}

/// The gateway's URI (or URI template) for `server`'s resource `uri`: the server's URI kept
/// whole after `switchyard://<server>/`, so a template's variables stay where they were.
pub fn qualify_uri(server: &str, uri: &str) -> String {
    format!("{RESOURCE_SCHEME}://{server}/{uri}")
}

/// The server and the server's own URI of a gateway resource URI, or `None` when it is not one.
pub fn split_uri(qualified: &str) -> Option<(&str, &str)> {
    let rest = qualified
        .strip_prefix(RESOURCE_SCHEME)?
        .strip_prefix("://")?;
    let (server, uri) = rest.split_once('/')?;
    (!server.is_empty() && !uri.is_empty()).then_some((server, uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_first_separator() {
        assert_eq!(qualify("everything", "echo"), "everything__echo");
        assert_eq!(split("everything__echo"), Some(("everything", "echo")));
        // The server's own name may contain the separator; the server's name may not.
        assert_eq!(split("files__read__all"), Some(("files", "read__all")));
        assert_eq!(split("my-server__get_sum"), Some(("my-server", "get_sum")));
        assert!(is_gateway_server_name("my_server"));
        assert!(!is_gateway_server_name("my__server"));
        assert!(!is_gateway_server_name("server_"));
        for invalid in ["echo", "__echo", "everything__", "", "_"] {
            assert_eq!(split(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn uris_keep_the_servers_uri_whole() {
        let uri = qualify_uri("everything", "test://static/resource/1");
        assert_eq!(uri, "switchyard://everything/test://static/resource/1");
        assert_eq!(
            split_uri(&uri),
            Some(("everything", "test://static/resource/1"))
        );
        assert_eq!(
            qualify_uri("files", "file:///tmp/{name}"),
            "switchyard://files/file:///tmp/{name}"
        );
        for invalid in [
            "test://static/resource/1",
            "switchyard://everything",
            "switchyard://everything/",
            "switchyard:///x",
            "other://everything/x",
        ] {
            assert_eq!(split_uri(invalid), None, "{invalid:?}");
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Server names as the configuration admits them for the gateway.
    fn server_name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9.~-]{0,8}(_[A-Za-z0-9.~-]{1,4}){0,2}"
    }

    proptest! {
        #[test]
        fn every_name_comes_back(server in server_name(), name in "[ -~]{1,24}") {
            prop_assert!(is_gateway_server_name(&server));
            let (tool, uri) = (qualify(&server, &name), qualify_uri(&server, &name));
            prop_assert_eq!(split(&tool), Some((server.as_str(), name.as_str())));
            prop_assert_eq!(split_uri(&uri), Some((server.as_str(), name.as_str())));
        }
    }
}
