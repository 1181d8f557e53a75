//! The one retry policy of both modes: which failures of an LLM request may be repeated, and
//! after what pause. The proxy applies it to its upstreams, the SDK to its own requests, so a
//! failure is retried alike wherever it happens.
//!
//! Sans-IO like the rest of the crate: the caller reports the failure, the attempts made, the
//! time spent and a random number, and executes the answer (sleep, send again, or give up).
//!
//! Only failures where repeating cannot do harm are retried: the request never reached the server
//! (connection refused, DNS, TLS before sending), or the server said "not now" (502, 503, and 429
//! when it says when via `Retry-After`). A timeout, a 500 or a broken connection after sending may
//! have cost the upstream work and tokens, and is reported rather than repeated. Once any byte of
//! a streamed body has been passed on, nothing is retried: the caller already has part of an
//! answer.

use core::time::Duration;

use crate::route::WireFormat;

/// How often and how long a failed request is repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// The pause before the first retry, before jitter; it doubles with each further one.
    pub base_delay: Duration,
    /// The longest pause computed by backoff (a `Retry-After` is honoured as given instead).
    pub max_delay: Duration,
    /// Time from the first attempt within which every retry must start.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a request failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The request never reached the server: connection refused, DNS, TLS before sending, or the
    /// browser's network error.
    NotSent,
    /// The server is overloaded or its own upstream failed (502, 503).
    Unavailable,
    /// The server answered 429 and said, in seconds, when to come back.
    RateLimited {
        /// The `Retry-After` delay, in whole seconds.
        retry_after: u64,
    },
    /// Anything that must not be repeated: other statuses, a timeout, a failure after the
    /// request was sent, or a stream that already passed bytes on.
    Final,
}

impl Failure {
    /// Classifies an answer with a status that is not 2xx, received before any of its body was
    /// passed on.
    ///
    /// The proxy already retries its upstreams with this same policy, so an answer read in the
    /// proxy's format ([`WireFormat::Switchyard`]) is retried only for a 503, which the proxy
    /// never sends for an upstream (a load balancer or a draining instance in front does); its
    /// 502 and 429 report an upstream the proxy gave up on, and repeating them would multiply
    /// the upstream's load.
    pub fn from_status(format: WireFormat, status: u16, retry_after: Option<&str>) -> Failure {
        match (format, status) {
            (_, 503) | (WireFormat::Provider(_), 502) => Failure::Unavailable,
            (WireFormat::Provider(_), 429) => {
                // The same reading as the error passed on to the caller: both see one delay.
                match retry_after.and_then(crate::error::parse_retry_after) {
                    Some(retry_after) => Failure::RateLimited { retry_after },
                    None => Failure::Final,
                }
            }
            _ => Failure::Final,
        }
    }

    /// Classifies a non-2xx answer to a request for the proxy that is not the proxy's own (its
    /// errors are JSON): a gateway in front of it, such as a load balancer, answered because it
    /// lost the instance that had the request or found none (502, 504), or is overloaded (503).
    /// Another instance can answer, so these are retried.
    pub fn from_gateway(status: u16) -> Failure {
        match status {
            502..=504 => Failure::Unavailable,
            _ => Failure::Final,
        }
    }

    /// A short fixed label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Failure::NotSent => "unreachable",
            Failure::Unavailable => "unavailable",
            Failure::RateLimited { .. } => "rate_limited",
            Failure::Final => "final",
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the request again after this pause.
    RetryAfter(Duration),
    /// Report the failure.
    GiveUp,
}

impl RetryPolicy {
    /// 3 attempts, 100 ms doubling up to 1 s, all retries started within 2 s.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        budget: Duration::from_secs(2),
    };

    /// No retries.
    pub const OFF: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        ..Self::DEFAULT
    };

    /// Whether any failure can be retried at all.
    pub fn enabled(&self) -> bool {
        self.max_attempts > 1
    }

    /// Decides about a failure of attempt number `attempts` (1 for the first), `elapsed` after
    /// the first attempt started. `random` is uniform in `[0, 1)` (anything else is clamped);
    /// the caller supplies it so that the decision is a pure function.
    pub fn decide(
        &self,
        attempts: u32,
        elapsed: Duration,
        failure: Failure,
        random: f64,
    ) -> Decision {
        if attempts >= self.max_attempts {
            return Decision::GiveUp;
        }
        let delay = match failure {
            Failure::NotSent | Failure::Unavailable => self.backoff(attempts, random),
            // The server's own word is the delay; jitter would only make it wait longer.
            Failure::RateLimited { retry_after } => Duration::from_secs(retry_after),
            Failure::Final => return Decision::GiveUp,
        };
        match elapsed.checked_add(delay) {
            Some(start) if start <= self.budget => Decision::RetryAfter(delay),
            _ => Decision::GiveUp,
        }
    }

    /// Exponential backoff with equal jitter: half of the capped delay is kept and the other half
    /// drawn at random. Full jitter spreads clients best but may retry at once, which an
    /// overloaded upstream answering 503 does not need; keeping half guarantees it a pause while
    /// the random half still keeps many clients from retrying in step.
    fn backoff(&self, attempts: u32, random: f64) -> Duration {
        let base = u64::try_from(self.base_delay.as_micros()).unwrap_or(u64::MAX);
        let cap = u64::try_from(self.max_delay.as_micros()).unwrap_or(u64::MAX);
        let doubled = base.saturating_mul(
            1u64.checked_shl(attempts.saturating_sub(1))
                .unwrap_or(u64::MAX),
        );
        let delay = doubled.min(cap);
        let half = delay / 2;
        // NaN fails both comparisons and becomes 0; the float-to-int cast saturates.
        let random = if random > 0.0 { random.min(1.0) } else { 0.0 };
        let jitter = ((delay - half) as f64 * random) as u64;
        Duration::from_micros(half + jitter.min(delay - half))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApiError, ProviderKind};

    const UPSTREAM: WireFormat = WireFormat::Provider(ProviderKind::OpenAi);

    fn retry_in(d: Decision) -> Duration {
        match d {
            Decision::RetryAfter(d) => d,
            Decision::GiveUp => panic!("expected a retry"),
        }
    }

    #[test]
    fn statuses_are_classified() {
        let f = |status, retry_after| Failure::from_status(UPSTREAM, status, retry_after);
        assert_eq!(f(502, None), Failure::Unavailable);
        assert_eq!(f(503, Some("3")), Failure::Unavailable);
        assert_eq!(f(429, Some("1")), Failure::RateLimited { retry_after: 1 });
        assert_eq!(f(429, Some("0.2")), Failure::RateLimited { retry_after: 1 });
        assert_eq!(f(429, None), Failure::Final);
        assert_eq!(
            f(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Failure::Final
        );
        for status in [400, 401, 403, 404, 408, 413, 500, 504, 529] {
            assert_eq!(f(status, Some("1")), Failure::Final, "{status}");
        }
    }

    #[test]
    fn answers_of_the_proxy_are_retried_only_for_503() {
        let f =
            |status, retry_after| Failure::from_status(WireFormat::Switchyard, status, retry_after);
        assert_eq!(f(503, None), Failure::Unavailable);
        assert_eq!(f(502, None), Failure::Final);
        assert_eq!(f(429, Some("1")), Failure::Final);
        // Unless a gateway in front of the proxy answered instead of it.
        for status in [502, 503, 504] {
            assert_eq!(Failure::from_gateway(status), Failure::Unavailable);
        }
        for status in [400, 401, 404, 429, 500] {
            assert_eq!(Failure::from_gateway(status), Failure::Final);
        }
    }

    #[test]
    fn whatever_is_retried_is_reported_retryable_too() {
        for status in 100..600 {
            if Failure::from_status(UPSTREAM, status, Some("1")) != Failure::Final {
                let e = ApiError::from_upstream_status(status, None, Some("1"));
                assert!(e.retryable, "{status}");
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            budget: Duration::from_secs(100),
            ..RetryPolicy::DEFAULT
        };
        let low = |n| retry_in(p.decide(n, Duration::ZERO, Failure::Unavailable, 0.0));
        let high = |n| retry_in(p.decide(n, Duration::ZERO, Failure::NotSent, 0.999_999));
        assert_eq!(low(1), Duration::from_millis(50));
        assert_eq!(low(2), Duration::from_millis(100));
        assert_eq!(low(3), Duration::from_millis(200));
        assert_eq!(low(9), Duration::from_millis(500));
        assert!(high(1) > Duration::from_millis(99) && high(1) <= Duration::from_millis(100));
        assert!(high(9) <= Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_the_delay_and_must_fit_the_budget() {
        let p = RetryPolicy::DEFAULT;
        let one = Failure::RateLimited { retry_after: 1 };
        assert_eq!(
            p.decide(1, Duration::ZERO, one, 0.5),
            Decision::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            p.decide(1, Duration::from_millis(1_500), one, 0.5),
            Decision::GiveUp
        );
        let five = Failure::RateLimited { retry_after: 5 };
        assert_eq!(p.decide(1, Duration::ZERO, five, 0.5), Decision::GiveUp);
    }

    #[test]
    fn attempts_are_limited_and_off_means_off() {
        let p = RetryPolicy::DEFAULT;
        assert!(matches!(
            p.decide(2, Duration::ZERO, Failure::NotSent, 0.1),
            Decision::RetryAfter(_)
        ));
        assert_eq!(
            p.decide(3, Duration::ZERO, Failure::NotSent, 0.1),
            Decision::GiveUp
        );
        assert!(!RetryPolicy::OFF.enabled());
        assert_eq!(
            RetryPolicy::OFF.decide(1, Duration::ZERO, Failure::NotSent, 0.1),
            Decision::GiveUp
        );
    }

    #[test]
    fn odd_random_numbers_stay_in_range() {
        let p = RetryPolicy::DEFAULT;
        for r in [f64::NAN, -1.0, 2.0, f64::INFINITY, f64::NEG_INFINITY] {
            let d = retry_in(p.decide(1, Duration::ZERO, Failure::NotSent, r));
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
                "{r}: {d:?}"
            );
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn failure() -> impl Strategy<Value = Failure> {
            prop_oneof![
                Just(Failure::NotSent),
                Just(Failure::Unavailable),
                Just(Failure::Final),
                (0u64..10).prop_map(|retry_after| Failure::RateLimited { retry_after }),
            ]
        }

        fn policy() -> impl Strategy<Value = RetryPolicy> {
            (1u32..8, 0u64..5_000, 0u64..20_000, 0u64..30_000).prop_map(
                |(max_attempts, base, max, budget)| RetryPolicy {
                    max_attempts,
                    base_delay: Duration::from_millis(base),
                    max_delay: Duration::from_millis(max),
                    budget: Duration::from_millis(budget),
                },
            )
        }

        proptest! {
            #[test]
            fn decisions_stay_within_their_bounds(
                p in policy(),
                attempts in 0u32..80,
                elapsed in 0u64..40_000,
                failure in failure(),
                random in proptest::num::f64::ANY,
            ) {
                let elapsed = Duration::from_millis(elapsed);
                match p.decide(attempts, elapsed, failure, random) {
                    Decision::GiveUp => {}
                    Decision::RetryAfter(delay) => {
                        prop_assert!(attempts < p.max_attempts);
                        prop_assert!(elapsed + delay <= p.budget);
                        match failure {
                            Failure::Final => prop_assert!(false, "a final failure was retried"),
                            Failure::RateLimited { retry_after } => {
                                prop_assert_eq!(delay, Duration::from_secs(retry_after));
                            }
                            Failure::NotSent | Failure::Unavailable => {
                                prop_assert!(delay <= p.max_delay);
                                let floor = p.base_delay.min(p.max_delay) / 2;
                                prop_assert!(delay + Duration::from_micros(1) >= floor);
                            }
                        }
                    }
                }
            }

            #[test]
            fn a_whole_run_never_exceeds_the_budget(
                p in policy(),
                failure in failure(),
                randoms in proptest::collection::vec(0.0f64..1.0, 8),
            ) {
                let mut elapsed = Duration::ZERO;
                let mut attempts = 1;
                while let Decision::RetryAfter(delay) =
                    p.decide(attempts, elapsed, failure, randoms[attempts as usize % randoms.len()])
                {
                    elapsed += delay;
                    attempts += 1;
                    prop_assert!(attempts <= p.max_attempts);
                }
                prop_assert!(elapsed <= p.budget);
                if failure == Failure::Final {
                    prop_assert_eq!(attempts, 1);
                }
            }
        }
    }
}
