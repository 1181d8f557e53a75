//! Request rates and token budgets shared by several proxy instances through one Redis
//! (`[cluster] redis_url`). Each check is one Lua script, run atomically by Redis, with the same
//! arithmetic as the in-process limiter: GCRA as `governor` computes it for requests, a one-minute
//! sliding window for tokens. Time is Redis's own clock (`TIME`), so instances whose clocks
//! differ still agree; every key expires once its state would be back to empty.
//!
//! Keys, under `key_prefix` (default `switchyard:`), per caller (`key:<name>` or `jwt:<sub>`):
//! `{<caller>}:rate` (the theoretical arrival time of the next request, microseconds),
//! `{<caller>}:tokens` (a sorted set of `<seq>:<tokens>` scored by time) and
//! `{<caller>}:tokens:meta` (`total` and `seq`). The braces keep one caller's keys in one slot.
//!
//! While Redis does not answer, checks follow `on_redis_unavailable`. Asking a Redis that is down
//! would cost every request the whole timeout, so after a failure only one request per
//! [`PROBE_EVERY`] asks (and, when it gets an answer, brings the shared limits back); the others
//! are decided by the policy at once. Two atomics do this; a circuit-breaker crate would bring a
//! state machine and timers for the same two decisions.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, ScriptInvocation};

use super::LimitSettings;
use crate::config::{ClusterConfig, RedisUnavailable, RedisUrl};
use crate::observability::Metrics;

/// How often a request asks a Redis that did not answer the last time.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The clock and the token window, shared by both scripts.
const PRELUDE: &str = r#"
local WINDOW = 60000000
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- Large numbers are written with %.0f: Lua's own conversion keeps 14 digits, and times in
-- microseconds have 16.
local function int(n)
  return string.format('%.0f', n)
end

local function tokens_of(entry)
  return tonumber(string.match(entry, ':(%d+)$')) or 0
end

-- Drops the entries that left the window; the tokens still in it.
local function tokens_in_window(entries, meta)
  if redis.call('EXISTS', entries) == 0 then
    redis.call('DEL', meta)
    return 0
  end
  local total = tonumber(redis.call('HGET', meta, 'total')) or 0
  local old = redis.call('ZRANGEBYSCORE', entries, '-inf', int(now - WINDOW))
  if #old > 0 then
    for _, entry in ipairs(old) do
      total = total - tokens_of(entry)
    end
    if total < 0 then
      total = 0
    end
    redis.call('ZREMRANGEBYSCORE', entries, '-inf', int(now - WINDOW))
    redis.call('HSET', meta, 'total', int(total))
  end
  return total
end
"#;

/// KEYS: rate, token entries, token meta. ARGV: requests per minute, tokens per minute (0: no
/// limit). Answers `{0, 0}` (admitted), `{1, wait}` (tokens over) or `{2, wait}` (requests over),
/// the wait in microseconds.
const ADMIT: &str = r#"
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
if tpm > 0 then
  local total = tokens_in_window(KEYS[2], KEYS[3])
  if total >= tpm then
    -- Until enough of the oldest entries leave the window for the total to fall under the limit.
    local wait = 0
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      total = total - tokens_of(entries[i])
      if total < tpm then
        wait = tonumber(entries[i + 1]) + WINDOW - now
        break
      end
    end
    return {1, math.max(0, math.ceil(wait))}
  end
end
if rpm > 0 then
  -- GCRA as governor computes it: one request every t, bursts of rpm.
  local t = 60000000 / rpm
  local tau = t * (rpm - 1)
  local tat = tonumber(redis.call('GET', KEYS[1])) or now
  local earliest = tat - tau
  if now < earliest then
    return {2, math.ceil(earliest - now)}
  end
  local new_tat = math.max(tat, now) + t
  redis.call('SET', KEYS[1], int(new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
end
return {0, 0}
"#;

/// KEYS: token entries, token meta. ARGV: tokens.
const CHARGE: &str = r#"
local tokens = tonumber(ARGV[1])
tokens_in_window(KEYS[1], KEYS[2])
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('ZADD', KEYS[1], int(now), seq .. ':' .. int(tokens))
redis.call('HINCRBY', KEYS[2], 'total', int(tokens))
local ttl = WINDOW / 1000 + 1000
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 0
"#;

/// What Redis answered about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within every limit (and counted).
    Admitted,
    /// Over the token budget; room comes back after the wait.
    TokensOver(Duration),
    /// Over the request rate; the next request is conforming after the wait.
    RequestsOver(Duration),
}

/// Redis could not be asked, or did not answer in time: the policy decides.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unreachable;

/// Whether Redis answered the last time it was asked.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The connection to the shared store and the two scripts. Cheap to clone.
#[derive(Clone)]
pub(super) struct SharedLimits(Arc<Inner>);

struct Inner {
    redis: ConnectionManager,
    admit: Script,
    charge: Script,
    timeout: Duration,
    prefix: String,
    policy: RedisUnavailable,
    /// `host:port`: what logs show (the URL may hold a password).
    address: String,
    state: AtomicU8,
    /// Milliseconds after `started` when the next request may ask a Redis that is down.
    next_probe_ms: AtomicU64,
    started: Instant,
    metrics: Metrics,
}

impl fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimits")
            .field("redis", &self.0.address)
            .field("policy", &self.0.policy)
            .finish()
    }
}

impl SharedLimits {
    /// A connection to `url`, made in the background: the proxy starts whether or not Redis
    /// answers yet, and checks follow the policy until it does.
    pub(super) fn new(
        config: &ClusterConfig,
        url: &RedisUrl,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        // The URL was checked when the configuration was read; the message never repeats it.
        let client = redis::Client::open(url.expose())
            .map_err(|_| anyhow::anyhow!("cluster.redis_url: not a usable Redis URL"))?;
        tokio::runtime::Handle::try_current().context("the shared limits need a Tokio runtime")?;
        let timeout = config.redis_timeout();
        // Few, short retries: a request never waits longer than `timeout` anyway, and the
        // probes (`PROBE_EVERY`) start a new connection attempt when these are spent.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| anyhow::anyhow!("cannot set up the Redis client: {}", describe(&e)))?;
        let shared = SharedLimits(Arc::new(Inner {
            redis,
            admit: Script::new(&format!("{PRELUDE}{ADMIT}")),
            charge: Script::new(&format!("{PRELUDE}{CHARGE}")),
            timeout,
            prefix: config.key_prefix.clone(),
            policy: config.on_redis_unavailable,
            address: url.address().to_owned(),
            state: AtomicU8::new(UNKNOWN),
            next_probe_ms: AtomicU64::new(0),
            started: Instant::now(),
            metrics: metrics.clone(),
        }));
        metrics.record_redis_up(false);
        // Says at start-up whether Redis answers, rather than at the first limited request.
        let probe = shared.clone();
        tokio::spawn(async move {
            let mut redis = probe.0.redis.clone();
            let ping = redis::cmd("PING");
            let ping = ping.query_async::<String>(&mut redis);
            match tokio::time::timeout(probe.0.timeout.max(Duration::from_secs(1)), ping).await {
                Ok(Ok(_)) => probe.answered(),
                Ok(Err(e)) => probe.failed(&describe(&e)),
                Err(_) => probe.failed("no answer in time"),
            }
        });
        Ok(shared)
    }

    /// What checks do while Redis does not answer.
    pub(super) fn policy(&self) -> RedisUnavailable {
        self.0.policy
    }

    /// Counts one check decided by the policy.
    pub(super) fn record_policy(&self, check: &'static str) {
        self.0
            .metrics
            .record_policy_decision(check, self.0.policy.as_str());
    }

    /// Admits one request of `user` within `limits`, counting it, in one script.
    pub(super) async fn admit(
        &self,
        user: &str,
        limits: &LimitSettings,
    ) -> Result<Verdict, Unreachable> {
        let rpm = limits.requests_per_minute.map_or(0, NonZeroU32::get);
        let tpm = limits.tokens_per_minute.map_or(0, NonZeroU64::get);
        if rpm == 0 && tpm == 0 {
            return Ok(Verdict::Admitted);
        }
        let mut call = self.0.admit.prepare_invoke();
        call.key(self.key(user, "rate"))
            .key(self.key(user, "tokens"))
            .key(self.key(user, "tokens:meta"))
            .arg(rpm)
            .arg(tpm);
        let answer: Vec<i64> = self.run(&call).await?;
        let wait = |micros: i64| Duration::from_micros(u64::try_from(micros).unwrap_or(0));
        Ok(match answer.as_slice() {
            [1, micros] => Verdict::TokensOver(wait(*micros)),
            [2, micros] => Verdict::RequestsOver(wait(*micros)),
            _ => Verdict::Admitted,
        })
    }

    /// Counts `tokens` against `user`'s window, in one script.
    pub(super) async fn charge(&self, user: &str, tokens: u64) -> Result<(), Unreachable> {
        let mut call = self.0.charge.prepare_invoke();
        call.key(self.key(user, "tokens"))
            .key(self.key(user, "tokens:meta"))
            .arg(tokens);
        self.run::<i64>(&call).await.map(|_| ())
    }

    fn key(&self, user: &str, what: &str) -> String {
        format!("{}{{{user}}}:{what}", self.0.prefix)
    }

    /// Records that the client of MCP gateway session `id` ended it, for `ttl` (as long as its
    /// id would stay valid), so that no instance resumes it.
    pub(super) async fn end_session(&self, id: &str, ttl: Duration) -> Result<(), Unreachable> {
        let mut redis = self.0.redis.clone();
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut set = redis::cmd("SET");
        set.arg(self.session_key(id)).arg(1).arg("PX").arg(ttl);
        self.ask(set.query_async::<()>(&mut redis)).await
    }

    /// Whether the client of MCP gateway session `id` ended it, on any instance.
    pub(super) async fn session_ended(&self, id: &str) -> Result<bool, Unreachable> {
        let mut redis = self.0.redis.clone();
        let mut exists = redis::cmd("EXISTS");
        exists.arg(self.session_key(id));
        self.ask(exists.query_async::<bool>(&mut redis)).await
    }

    fn session_key(&self, id: &str) -> String {
        format!("{}session-ended:{id}", self.0.prefix)
    }

    /// Runs `call` within the timeout, unless Redis is down and it is not yet time to ask again.
    async fn run<T: redis::FromRedisValue>(
        &self,
        call: &ScriptInvocation<'_>,
    ) -> Result<T, Unreachable> {
        let mut redis = self.0.redis.clone();
        self.ask(call.invoke_async(&mut redis)).await
    }

    /// Awaits `answer` within the timeout, unless Redis is down and it is not yet time to ask
    /// again.
    async fn ask<T>(
        &self,
        answer: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, Unreachable> {
        if !self.may_ask() {
            return Err(Unreachable);
        }
        match tokio::time::timeout(self.0.timeout, answer).await {
            Ok(Ok(answer)) => {
                self.answered();
                Ok(answer)
            }
            Ok(Err(e)) => {
                self.failed(&describe(&e));
                Err(Unreachable)
            }
            Err(_) => {
                self.failed("no answer within cluster.redis_timeout_ms");
                Err(Unreachable)
            }
        }
    }

    /// Always while Redis answers; while it does not, one request per [`PROBE_EVERY`].
    fn may_ask(&self) -> bool {
        if self.0.state.load(Ordering::Relaxed) != DOWN {
            return true;
        }
        let now = self.elapsed_ms();
        let next = self.0.next_probe_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .0
                .next_probe_ms
                .compare_exchange(next, now + probe_ms(), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Redis answered: said once when it was down (or not yet asked).
    fn answered(&self) {
        if self.0.state.swap(UP, Ordering::Relaxed) != UP {
            self.0.metrics.record_redis_up(true);
            tracing::info!(
                redis = %self.0.address,
                "Redis answers: request rates and token budgets are shared with the other instances"
            );
        }
    }

    /// Redis did not answer: said once, until it answers again.
    fn failed(&self, reason: &str) {
        self.0
            .next_probe_ms
            .store(self.elapsed_ms() + probe_ms(), Ordering::Relaxed);
        if self.0.state.swap(DOWN, Ordering::Relaxed) != DOWN {
            self.0.metrics.record_redis_up(false);
            tracing::warn!(
                redis = %self.0.address,
                reason,
                policy = self.0.policy.as_str(),
                "Redis cannot be reached: limits follow cluster.on_redis_unavailable until it answers{}",
                match self.0.policy {
                    RedisUnavailable::Open => " (admitted, and counted by each instance alone)",
                    RedisUnavailable::Closed => " (limited callers get 503 unavailable)",
                }
            );
        }
    }
}

fn probe_ms() -> u64 {
    u64::try_from(PROBE_EVERY.as_millis()).unwrap_or(1_000)
}

/// Why a call failed, in words that cannot carry the URL or its password: connection failures
/// by their kind, and Redis's own replies (which never repeat credentials) as they are.
fn describe(e: &RedisError) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else if e.is_connection_dropped() {
        "connection lost".to_owned()
    } else if e.is_io_error() {
        "I/O error".to_owned()
    } else {
        e.to_string()
    }
}
