//! `[cluster]`: several proxy instances sharing their callers' request rates and token budgets
//! through one Redis. Without `redis_url` each instance keeps its limits in process. Checked at
//! start-up; the URL may carry a password, so it is never repeated into a message.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::ConfigError;

/// The `[cluster]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[:password@]host[:port][/db]`: where limits are kept; absent keeps them in
    /// process.
    pub redis_url: Option<RedisUrl>,
    /// What a check does while Redis cannot be reached or does not answer in time.
    pub on_redis_unavailable: RedisUnavailable,
    /// Longest wait for one answer from Redis, in milliseconds, before the policy decides.
    pub redis_timeout_ms: u64,
    /// Put before every key the proxy writes, so that several deployments can share one Redis.
    pub key_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            on_redis_unavailable: RedisUnavailable::Open,
            redis_timeout_ms: 100,
            key_prefix: "switchyard:".to_owned(),
        }
    }
}

impl ClusterConfig {
    /// [`Self::redis_timeout_ms`] as a duration.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
}

/// `on_redis_unavailable`: admit and count in this instance alone, or refuse with `503`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisUnavailable {
    /// Admit; each instance applies the limits to its own traffic until Redis is back.
    Open,
    /// Refuse limited callers with `503 unavailable` until Redis is back.
    Closed,
}

impl RedisUnavailable {
    /// The value as written in the config file (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            RedisUnavailable::Open => "open",
            RedisUnavailable::Closed => "closed",
        }
    }
}

/// A Redis URL. It may hold a password: `Debug` shows only where it points.
#[derive(Clone)]
pub struct RedisUrl {
    url: String,
    address: String,
}

impl RedisUrl {
    /// The URL itself, password included: for the Redis client only.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// `host:port`, what logs may show.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Reads `url`; the problem, when there is one, never repeats the URL.
    fn parse(url: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("is not a URL ({e}); expected redis://[:password@]host[:port]"))?;
        if parsed.scheme() != "redis" {
            return Err(format!(
                "has the scheme {:?}; only redis:// is supported (put a TLS tunnel in front of \
                 Redis for rediss://)",
                parsed.scheme()
            ));
        }
        let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
            return Err("names no host; expected redis://[:password@]host[:port]".to_owned());
        };
        // The Redis client's own reading of it (database number, credentials).
        if redis::Client::open(url).is_err() {
            return Err("is not a Redis URL the client can use; expected \
                        redis://[:password@]host[:port][/db]"
                .to_owned());
        }
        let address = format!("{host}:{}", parsed.port().unwrap_or(6379));
        Ok(RedisUrl {
            url: url.to_owned(),
            address,
        })
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl(redis://{})", self.address)
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let url = String::deserialize(deserializer)?;
        RedisUrl::parse(&url).map_err(serde::de::Error::custom)
    }
}

/// Checks the values serde cannot.
pub(super) fn check(cluster: &ClusterConfig, origin: &str) -> Result<(), ConfigError> {
    if cluster.redis_timeout_ms == 0 || cluster.redis_timeout_ms > 10_000 {
        return Err(ConfigError::invalid(
            origin,
            "cluster.redis_timeout_ms",
            "must be between 1 and 10000 (a few tens of milliseconds is usual: every limited \
             request waits for it)",
        ));
    }
    if cluster.key_prefix.len() > 200 || cluster.key_prefix.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            origin,
            "cluster.key_prefix",
            "must be at most 200 characters, none of them control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    const ORIGIN: &str = "cluster.toml";

    fn error(text: &str) -> String {
        Config::from_toml_str(text, ORIGIN).unwrap_err().to_string()
    }

    #[test]
    fn absent_means_in_process_limits() {
        let c = Config::from_toml_str("", ORIGIN).unwrap();
        assert!(c.cluster.redis_url.is_none());
        assert_eq!(c.cluster.on_redis_unavailable, RedisUnavailable::Open);
        assert_eq!(c.cluster.redis_timeout(), Duration::from_millis(100));
        assert_eq!(c.cluster.key_prefix, "switchyard:");
    }

    #[test]
    fn a_full_table_parses_and_hides_the_password() {
        let c = Config::from_toml_str(
            "[cluster]\nredis_url = \"redis://:hunter2@10.0.0.5:6380/2\"\n\
             on_redis_unavailable = \"closed\"\nredis_timeout_ms = 50\nkey_prefix = \"prod:\"\n",
            ORIGIN,
        )
        .unwrap();
        let url = c.cluster.redis_url.as_ref().unwrap();
        assert_eq!(url.address(), "10.0.0.5:6380");
        assert_eq!(c.cluster.on_redis_unavailable, RedisUnavailable::Closed);
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("10.0.0.5:6380"), "{shown}");
    }

    /// The commented-out `[cluster]` blocks of the example configurations, uncommented.
    #[test]
    fn the_example_blocks_parse() {
        for example in [
            include_str!("../../switchyard.example.toml"),
            include_str!("../../switchyard.hardened.toml"),
        ] {
            let block: String = example
                .lines()
                .skip_while(|l| *l != "# [cluster]")
                .take_while(|l| l.starts_with("# "))
                .map(|l| format!("{}\n", &l[2..]))
                .collect();
            assert!(block.starts_with("[cluster]"), "{block}");
            let c = Config::from_toml_str(&block, ORIGIN).unwrap();
            assert!(c.cluster.redis_url.is_some());
        }
    }

    #[test]
    fn mistakes_name_the_key_and_never_the_password() {
        let m = error("[cluster]\nredis_url = \"rediss://:hunter2@h:1\"\n");
        assert!(
            m.contains("`cluster.redis_url`") && m.contains("redis://"),
            "{m}"
        );
        assert!(!m.contains("hunter2"), "{m}");
        let m = error("[cluster]\nredis_url = \"hunter2\"\n");
        assert!(
            m.contains("`cluster.redis_url`") && !m.contains("hunter2"),
            "{m}"
        );
        let m = error("[cluster]\nredis_url = \"redis://h\"\non_redis_unavailable = \"maybe\"\n");
        assert!(
            m.contains("`cluster.on_redis_unavailable`") && m.contains("open"),
            "{m}"
        );
        let m = error("[cluster]\nredis_timeout_ms = 0\n");
        assert!(m.contains("`cluster.redis_timeout_ms`"), "{m}");
        let m = error("[cluster]\nredis = \"redis://h\"\n");
        assert!(m.contains("unknown field `redis`"), "{m}");
    }
}
