//! Per-user limits: requests per minute, concurrent streams and LLM tokens per minute. Over a
//! limit the caller gets `429 rate_limited` with `Retry-After`. Each user (a key's name or a JWT's
//! `sub`, see [`crate::identity`]) has its own budget, created the first time it is seen.
//!
//! Requests use `governor` (GCRA). Tokens cannot: they are known only once an answer is complete,
//! so they are recorded after the fact and may overdraw the budget, which governor's limiters do
//! not allow. They are counted in a one-minute sliding window instead.
//!
//! With `[cluster] redis_url`, request rates and token budgets are kept in Redis instead, with
//! the same arithmetic (`limits/cluster.rs`), so that they hold across instances; open streams
//! stay counted by each instance.

mod cluster;

use std::collections::{HashMap, VecDeque};
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use switchyard_shared::{ApiError, ErrorCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use switchyard_shared::StreamEvent;
use switchyard_shared::mcp::McpToolEvent;

use crate::config::{ClusterConfig, RedisUnavailable};
use crate::identity::{Grants, Identity, IdentitySource};
use crate::observability::Metrics;
use crate::stream_relay::RelayObserver;
use cluster::{SharedLimits, Unreachable, Verdict};

/// The window tokens are counted over.
const TOKEN_WINDOW: Duration = Duration::from_secs(60);
/// Users idle this long are forgotten (their budgets are full again by then anyway).
const IDLE_FORGET: Duration = Duration::from_secs(10 * 60);
/// Past this many users, idle ones are swept on the next new user; bounds memory when many JWT
/// subjects come and go.
const SWEEP_ABOVE: usize = 10_000;

/// The limits of one user (`[keys.limits]`, `[auth.jwt.limits]`); `None` is unlimited.
pub use crate::config::Limits as LimitSettings;

/// The budget of the caller of `request` (set by the authentication layer), as the key its
/// budget is kept under: a key and a JWT subject of the same name do not share one.
fn budget_key(identity: &Identity) -> Arc<str> {
    // A minted token spends its principal's budget: minting never adds one.
    let via = match identity.via.principal() {
        IdentitySource::Anonymous => "anonymous",
        IdentitySource::ApiKey | IdentitySource::Token(_) => "key",
        IdentitySource::Jwt => "jwt",
    };
    Arc::from(format!("{via}:{}", identity.user))
}

/// Who is asking and within which limits, from the request's extensions.
#[derive(Debug, Clone)]
pub struct Budget {
    key: Arc<str>,
    limits: LimitSettings,
    /// A minted token's own narrower budget, spent as well as its principal's.
    token: Option<(Arc<str>, LimitSettings)>,
}

impl Budget {
    /// The caller's budget, if the authentication layer set one.
    pub fn of(extensions: &axum::http::Extensions) -> Option<Self> {
        let identity = extensions.get::<Identity>()?;
        let grants = extensions.get::<Arc<Grants>>()?;
        Some(Budget::of_caller(identity, grants))
    }

    /// The budget of a caller recognized other than by the request's extensions (a WebSocket's
    /// first frame).
    pub fn of_caller(identity: &Identity, grants: &Grants) -> Self {
        let token = grants.minted.as_ref().and_then(|minted| {
            let limits = minted.limits?;
            Some((Arc::from(format!("token:{}", minted.id)), limits))
        });
        Budget {
            key: budget_key(identity),
            limits: grants.limits,
            token,
        }
    }

    /// Admits one more request of this budget, in process or, with `[cluster]`, by the store
    /// the instances share: what the limit layer does for an HTTP request.
    pub async fn admit(&self, limiter: &Limiter) -> Result<(), ApiError> {
        if limiter.asks_store(self) {
            limiter.admit_shared(self).await
        } else {
            limiter.admit(self)
        }
    }

    /// No limits (a request the authentication layer did not see).
    fn unlimited() -> Self {
        Budget {
            key: Arc::from("anonymous"),
            limits: LimitSettings::default(),
            token: None,
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Budget {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Budget::of(&parts.extensions).unwrap_or_else(Budget::unlimited))
    }
}

/// Refuses a request over its caller's request rate or token budget (`429` with `Retry-After`).
/// A request the authentication layer did not see has no budget and passes.
pub fn check(limiter: &Limiter, extensions: &axum::http::Extensions) -> Result<(), ApiError> {
    match Budget::of(extensions) {
        Some(budget) => limiter.admit(&budget),
        None => Ok(()),
    }
}

/// A relayed stream's observer that also holds the caller's place among their open streams
/// (freed when the stream ends or the client goes) and counts the tokens it reports.
pub struct Metered<O> {
    inner: O,
    _permit: StreamPermit,
    limiter: Arc<Limiter>,
    budget: Budget,
}

impl<O> Metered<O> {
    /// The observer, giving the stream place back (the stream never started).
    pub fn into_inner(self) -> O {
        self.inner
    }

    /// A stream observed by `inner`, holding `permit` (from [`Limiter::stream`]) of `budget`.
    pub fn new(limiter: &Arc<Limiter>, budget: Budget, permit: StreamPermit, inner: O) -> Self {
        Metered {
            _permit: permit,
            inner,
            limiter: Arc::clone(limiter),
            budget,
        }
    }
}

impl<O: RelayObserver<StreamEvent>> RelayObserver<StreamEvent> for Metered<O> {
    fn started(&mut self) {
        self.inner.started();
    }

    fn event(&mut self, event: &StreamEvent) {
        if let StreamEvent::Usage { usage } = event {
            self.limiter
                .tokens(&self.budget, u64::from(usage.total_tokens));
        }
        self.inner.event(event);
    }
}

impl<O: RelayObserver<McpToolEvent>> RelayObserver<McpToolEvent> for Metered<O> {
    fn started(&mut self) {
        self.inner.started();
    }

    fn event(&mut self, event: &McpToolEvent) {
        self.inner.event(event);
    }
}

fn is_limited(limits: &LimitSettings) -> bool {
    *limits != LimitSettings::default()
}

/// Every user's budgets: in process, or request rates and tokens in the Redis the instances
/// share (`[cluster]`).
#[derive(Debug, Default)]
pub struct Limiter {
    users: Mutex<HashMap<Arc<str>, Arc<UserBudget>>>,
    shared: Option<SharedLimits>,
}

#[derive(Debug)]
struct UserBudget {
    requests: Option<DefaultDirectRateLimiter>,
    streams: Option<Arc<Semaphore>>,
    tokens: Option<(NonZeroU64, Mutex<TokenWindow>)>,
    last_seen: Mutex<Instant>,
}

/// Tokens used in the last [`TOKEN_WINDOW`], oldest first.
#[derive(Debug, Default)]
struct TokenWindow {
    entries: VecDeque<(Instant, u64)>,
    total: u64,
}

impl TokenWindow {
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, tokens)) = self.entries.front() {
            if now.duration_since(at) < TOKEN_WINDOW {
                break;
            }
            self.entries.pop_front();
            self.total = self.total.saturating_sub(tokens);
        }
    }

    /// How long until enough old entries leave the window for the total to fall under `limit`.
    fn wait_for_room(&self, limit: u64, now: Instant) -> Duration {
        let mut total = self.total;
        for &(at, tokens) in &self.entries {
            if total < limit {
                break;
            }
            total = total.saturating_sub(tokens);
            if total < limit {
                return (at + TOKEN_WINDOW).saturating_duration_since(now);
            }
        }
        Duration::ZERO
    }
}

/// Held while a stream is open; dropping it frees the place.
#[derive(Debug)]
pub struct StreamPermit {
    _permit: Option<OwnedSemaphorePermit>,
    /// A minted token's place among its own open streams.
    _token: Option<OwnedSemaphorePermit>,
}

impl Limiter {
    /// In-process limits, or shared through Redis when `cluster` names one.
    pub fn new(cluster: &ClusterConfig, metrics: &Metrics) -> anyhow::Result<Self> {
        let shared = match &cluster.redis_url {
            Some(url) => Some(SharedLimits::new(cluster, url, metrics)?),
            None => None,
        };
        Ok(Limiter {
            users: Mutex::default(),
            shared,
        })
    }

    /// Whether request rates and tokens are kept in Redis (`[cluster]`).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether admitting a request of `budget` means asking Redis (see [`Self::admit_shared`]);
    /// otherwise [`Self::admit`] decides at once.
    pub fn asks_store(&self, budget: &Budget) -> bool {
        let asks = |limits: &LimitSettings| {
            limits.requests_per_minute.is_some() || limits.tokens_per_minute.is_some()
        };
        self.shared.is_some()
            && (asks(&budget.limits) || budget.token.as_ref().is_some_and(|(_, l)| asks(l)))
    }

    /// Admits one request within `budget` in process, or says when to retry.
    pub fn admit(&self, budget: &Budget) -> Result<(), ApiError> {
        if let Some((key, limits)) = &budget.token {
            self.admit_request(key, limits)?;
        }
        self.admit_request(&budget.key, &budget.limits)
    }

    /// Admits one request within `budget` against the limits the instances share; while Redis
    /// cannot be asked, `on_redis_unavailable` decides: `open` admits within this instance's own
    /// count ([`Self::admit`]), `closed` refuses with `503 unavailable`.
    pub async fn admit_shared(&self, budget: &Budget) -> Result<(), ApiError> {
        if let Some((key, limits)) = &budget.token {
            self.admit_shared_one(key, limits).await?;
        }
        self.admit_shared_one(&budget.key, &budget.limits).await
    }

    async fn admit_shared_one(
        &self,
        key: &Arc<str>,
        limits: &LimitSettings,
    ) -> Result<(), ApiError> {
        let Some(shared) = &self.shared else {
            return self.admit_request(key, limits);
        };
        match shared.admit(key, limits).await {
            Ok(Verdict::Admitted) => Ok(()),
            Ok(Verdict::TokensOver(wait)) => Err(tokens_over(limits, wait)),
            Ok(Verdict::RequestsOver(wait)) => Err(requests_over(limits, wait)),
            Err(Unreachable) => {
                shared.record_policy("requests");
                match shared.policy() {
                    RedisUnavailable::Open => self.admit_request(key, limits),
                    RedisUnavailable::Closed => Err(store_unavailable()),
                }
            }
        }
    }

    /// Takes a place for one more open stream within `budget`.
    pub fn stream(&self, budget: &Budget) -> Result<StreamPermit, ApiError> {
        let token = match &budget.token {
            Some((key, limits)) => self.open_stream(key, limits)?,
            None => None,
        };
        Ok(StreamPermit {
            _permit: self.open_stream(&budget.key, &budget.limits)?,
            _token: token,
        })
    }

    /// Counts `tokens` an answer used against `budget`; with `[cluster]`, on a task of its own
    /// (a stream's observer cannot wait).
    pub fn tokens(self: &Arc<Self>, budget: &Budget, tokens: u64) {
        if let Some((key, limits)) = &budget.token {
            self.tokens(
                &Budget {
                    key: Arc::clone(key),
                    limits: *limits,
                    token: None,
                },
                tokens,
            );
        }
        if self.shared.is_none() || budget.limits.tokens_per_minute.is_none() || tokens == 0 {
            return self.record_tokens(&budget.key, &budget.limits, tokens);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let limiter = Arc::clone(self);
                let budget = budget.clone();
                runtime.spawn(async move { limiter.charge(&budget, tokens).await });
            }
            Err(_) => self.record_tokens(&budget.key, &budget.limits, tokens),
        }
    }

    /// Counts `tokens` an answer used against `budget`, and returns once they are counted, so
    /// that the caller's next request sees them on every instance. While Redis cannot be asked,
    /// they are counted in process (which is what `open` decides by then).
    pub async fn charge(&self, budget: &Budget, tokens: u64) {
        if let Some((key, limits)) = &budget.token {
            self.charge_one(key, limits, tokens).await;
        }
        self.charge_one(&budget.key, &budget.limits, tokens).await;
    }

    async fn charge_one(&self, key: &Arc<str>, limits: &LimitSettings, tokens: u64) {
        match &self.shared {
            Some(shared) if limits.tokens_per_minute.is_some() && tokens > 0 => {
                if shared.charge(key, tokens).await.is_err() {
                    shared.record_policy("tokens");
                    self.record_tokens(key, limits, tokens);
                }
            }
            _ => self.record_tokens(key, limits, tokens),
        }
    }

    /// With `[cluster]`, records for every instance that the client of MCP gateway session `id`
    /// ended it, for `ttl`. While Redis cannot be asked, only this instance knows (the caller
    /// keeps its own record).
    pub async fn end_gateway_session(&self, id: &str, ttl: Duration) {
        if let Some(shared) = &self.shared
            && shared.end_session(id, ttl).await.is_err()
        {
            shared.record_policy("sessions");
        }
    }

    /// With `[cluster]`, whether the client of MCP gateway session `id` ended it on any
    /// instance. While Redis cannot be asked, `on_redis_unavailable` decides: `open` counts only
    /// this instance's own record (not ended here), `closed` refuses (503 `unavailable`).
    pub async fn gateway_session_ended(&self, id: &str) -> Result<bool, ApiError> {
        let Some(shared) = &self.shared else {
            return Ok(false);
        };
        match shared.session_ended(id).await {
            Ok(ended) => Ok(ended),
            Err(Unreachable) => {
                shared.record_policy("sessions");
                match shared.policy() {
                    RedisUnavailable::Open => Ok(false),
                    RedisUnavailable::Closed => Err(store_unavailable()),
                }
            }
        }
    }

    /// Admits one request of `user`, or says when to retry. Also refuses while the user's tokens
    /// of the last minute are over their limit.
    fn admit_request(&self, user: &Arc<str>, settings: &LimitSettings) -> Result<(), ApiError> {
        if !is_limited(settings) {
            return Ok(());
        }
        let budget = self.budget(user, settings);
        if let Some((limit, window)) = &budget.tokens {
            let now = Instant::now();
            let mut window = window.lock().unwrap_or_else(|e| e.into_inner());
            window.expire(now);
            if window.total >= limit.get() {
                return Err(tokens_over(
                    settings,
                    window.wait_for_room(limit.get(), now),
                ));
            }
        }
        if let Some(requests) = &budget.requests
            && let Err(not_until) = requests.check()
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(requests_over(settings, wait));
        }
        Ok(())
    }

    /// Takes a place for one more open stream of `user`.
    fn open_stream(
        &self,
        user: &Arc<str>,
        settings: &LimitSettings,
    ) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        if settings.concurrent_streams.is_none() {
            return Ok(None);
        }
        let budget = self.budget(user, settings);
        let Some(streams) = &budget.streams else {
            return Ok(None);
        };
        match Arc::clone(streams).try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                let limit = settings.concurrent_streams.map_or(0, NonZeroU32::get);
                // A stream ends when it ends; a second is a reasonable time to look again.
                Err(limited(
                    format!("{limit} streams are already open; close one first"),
                    Duration::from_secs(1),
                ))
            }
        }
    }

    /// Counts `tokens` an answer used against `user`'s per-minute budget.
    fn record_tokens(&self, user: &Arc<str>, settings: &LimitSettings, tokens: u64) {
        if settings.tokens_per_minute.is_none() || tokens == 0 {
            return;
        }
        let budget = self.budget(user, settings);
        if let Some((_, window)) = &budget.tokens {
            let now = Instant::now();
            let mut window = window.lock().unwrap_or_else(|e| e.into_inner());
            window.expire(now);
            window.entries.push_back((now, tokens));
            window.total = window.total.saturating_add(tokens);
        }
    }

    /// The user's budget, created with `settings` the first time the user is seen.
    fn budget(&self, user: &Arc<str>, settings: &LimitSettings) -> Arc<UserBudget> {
        let now = Instant::now();
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(budget) = users.get(user) {
            *budget.last_seen.lock().unwrap_or_else(|e| e.into_inner()) = now;
            return Arc::clone(budget);
        }
        if users.len() >= SWEEP_ABOVE {
            users.retain(|_, b| {
                let seen = *b.last_seen.lock().unwrap_or_else(|e| e.into_inner());
                // A budget in use (an open stream holds a clone) is kept.
                Arc::strong_count(b) > 1 || now.duration_since(seen) < IDLE_FORGET
            });
        }
        let budget = Arc::new(UserBudget {
            requests: settings
                .requests_per_minute
                .map(|n| RateLimiter::direct(Quota::per_minute(n))),
            streams: settings
                .concurrent_streams
                .map(|n| Arc::new(Semaphore::new(n.get() as usize))),
            tokens: settings
                .tokens_per_minute
                .map(|n| (n, Mutex::new(TokenWindow::default()))),
            last_seen: Mutex::new(now),
        });
        users.insert(Arc::clone(user), Arc::clone(&budget));
        budget
    }
}

/// Over the request rate of `settings`; the next request conforms after `wait`.
fn requests_over(settings: &LimitSettings, wait: Duration) -> ApiError {
    let limit = settings.requests_per_minute.map_or(0, NonZeroU32::get);
    limited(
        format!("over the limit of {limit} requests per minute"),
        wait,
    )
}

/// Over the token budget of `settings`; there is room again after `wait`.
fn tokens_over(settings: &LimitSettings, wait: Duration) -> ApiError {
    let limit = settings.tokens_per_minute.map_or(0, NonZeroU64::get);
    limited(
        format!("over the limit of {limit} LLM tokens per minute"),
        wait,
    )
}

/// `503 unavailable` (`on_redis_unavailable = "closed"`): retry once Redis may be back.
fn store_unavailable() -> ApiError {
    let mut error = ApiError::new(
        ErrorCode::Unavailable,
        "the store the proxy instances share (rate limits, ended sessions) cannot be reached; try again shortly",
    );
    error.retry_after = Some(cluster::PROBE_EVERY.as_secs().max(1));
    error
}

/// `429 rate_limited`, retry after `wait` (whole seconds, at least one).
fn limited(message: String, wait: Duration) -> ApiError {
    let mut error = ApiError::new(ErrorCode::RateLimited, message);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    error.retry_after = Some(seconds.max(1));
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn settings(rpm: u32, streams: u32, tpm: u64) -> LimitSettings {
        LimitSettings {
            requests_per_minute: NonZeroU32::new(rpm),
            concurrent_streams: NonZeroU32::new(streams),
            tokens_per_minute: NonZeroU64::new(tpm),
        }
    }

    #[test]
    fn requests_over_the_rate_get_429_with_a_retry_time() {
        let limiter = Limiter::default();
        let limits = settings(3, 0, 0);
        let alice = user("alice");
        for _ in 0..3 {
            limiter.admit_request(&alice, &limits).unwrap();
        }
        let refused = limiter.admit_request(&alice, &limits).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert!(
            refused.message.contains("3 requests per minute"),
            "{refused:?}"
        );
        // One request every 20 s comes back first.
        assert!(matches!(refused.retry_after, Some(1..=20)), "{refused:?}");
        // Another user has a budget of their own.
        limiter.admit_request(&user("bob"), &limits).unwrap();
    }

    #[test]
    fn unlimited_users_are_not_even_tracked() {
        let limiter = Limiter::default();
        for _ in 0..1000 {
            limiter
                .admit_request(&user("x"), &LimitSettings::default())
                .unwrap();
        }
        assert!(limiter.users.lock().unwrap().is_empty());
    }

    #[test]
    fn streams_are_counted_while_open() {
        let limiter = Limiter::default();
        let limits = settings(0, 2, 0);
        let alice = user("alice");
        let first = limiter.open_stream(&alice, &limits).unwrap();
        let _second = limiter.open_stream(&alice, &limits).unwrap();
        let refused = limiter.open_stream(&alice, &limits).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.retry_after, Some(1));
        drop(first);
        limiter.open_stream(&alice, &limits).unwrap();
    }

    #[test]
    fn tokens_used_close_the_budget_until_they_leave_the_window() {
        let limiter = Limiter::default();
        let limits = settings(0, 0, 100);
        let alice = user("alice");
        limiter.admit_request(&alice, &limits).unwrap();
        limiter.record_tokens(&alice, &limits, 60);
        limiter.admit_request(&alice, &limits).unwrap();
        // Answers are counted after the fact and may overdraw.
        limiter.record_tokens(&alice, &limits, 70);
        let refused = limiter.admit_request(&alice, &limits).unwrap_err();
        assert!(refused.message.contains("100 LLM tokens per minute"));
        assert!(matches!(refused.retry_after, Some(59..=60)), "{refused:?}");
    }

    #[test]
    fn the_window_forgets_old_tokens() {
        let start = Instant::now();
        let mut window = TokenWindow::default();
        window.entries.push_back((start, 80));
        window
            .entries
            .push_back((start + Duration::from_secs(30), 40));
        window.total = 120;
        assert_eq!(
            window.wait_for_room(100, start + Duration::from_secs(10)),
            Duration::from_secs(50)
        );
        window.expire(start + Duration::from_secs(61));
        assert_eq!((window.total, window.entries.len()), (40, 1));
        assert_eq!(
            window.wait_for_room(100, start + Duration::from_secs(61)),
            Duration::ZERO
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(limited(String::new(), Duration::ZERO).retry_after, Some(1));
        assert_eq!(
            limited(String::new(), Duration::from_millis(2001)).retry_after,
            Some(3)
        );
    }
}
