//! A decimal number rounded up to a whole number, as `text.parse::<f64>()` followed by `ceil` and
//! a cast to `u64` would give, computed on the decimal digits.
//!
//! Why not parse an `f64`: core's float parser carries a table of 128-bit powers of five (over ten
//! kilobytes that gzip cannot shrink): with its code, 6% of the SDK's gzipped `.wasm`, for the
//! one `Retry-After` header that some APIs send in fractional seconds. The result is the same for
//! every input, the roundings of `f64` included, which the tests check against core's parser.

use std::cmp::Ordering;

/// `text` (Rust's float syntax, without `inf` and `nan`) rounded up, if it parses as a finite
/// `f64` that is not negative: `Some(0)` for a negative value that rounds to `-0.0`,
/// `Some(u64::MAX)` for values from 2^64 up to `f64::MAX`, and `None` for larger values, which
/// parse as infinity.
pub(crate) fn ceil_to_u64(text: &str) -> Option<u64> {
    let (negative, digits, point) = parse(text)?;
    // The value is 0.DIGITS × 10^point, DIGITS without leading or trailing zeros.
    if digits.is_empty() || rounds_to_zero(&digits, point) {
        return Some(0);
    }
    if negative || rounds_to_infinity(&digits, point) {
        return None;
    }
    if point > 20 {
        // At least 10^20, above 2^64: the cast saturates.
        return Some(u64::MAX);
    }
    if point <= 0 {
        // Below one and not rounded to zero: `ceil` gives one.
        return Some(1);
    }
    let point = point as usize;
    let whole = (0..point).fold(0u128, |n, i| {
        n * 10 + digits.get(i).map_or(0, |d| u128::from(*d))
    });
    if whole >> 64 != 0 {
        return Some(u64::MAX);
    }
    let fraction = digits.get(point..).unwrap_or_default();
    let bits = 128 - whole.leading_zeros();
    let rounded = if bits <= 53 {
        // Steps of 2^(bits-53) at most one: `whole` is exact, and the fraction rounds up to the
        // next step when above half a step (on a tie, when `whole`'s last mantissa bit is one).
        let zeros = fraction.iter().take_while(|d| **d == 0).count();
        let half = power_digits(1, 5, 54 - bits);
        let half_point = half.len() as i64 - i64::from(54 - bits);
        let up = match compare(&fraction[zeros..], -(zeros as i64), &half, half_point) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => bits == 53 && whole & 1 == 1,
        };
        whole + u128::from(up)
    } else {
        // Steps of 2^shift: round `whole` and the fraction to the nearest step, ties to even.
        let shift = bits - 53;
        let rest = whole & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        let steps = whole >> shift;
        let up = rest > half || (rest == half && (!fraction.is_empty() || steps & 1 == 1));
        (steps + u128::from(up)) << shift
    };
    Some(u64::try_from(rounded).unwrap_or(u64::MAX))
}

/// The sign, the significant digits (values 0 to 9) and the position of the decimal point
/// relative to them; `None` for text that is not a number.
fn parse(text: &str) -> Option<(bool, Vec<u8>, i64)> {
    let (negative, text) = sign(text);
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || !is_digits(whole) || !is_digits(fraction) {
        return None;
    }
    let exponent = match exponent {
        None => 0,
        Some(e) => {
            let (minus, e) = sign(e);
            if e.is_empty() || !is_digits(e) {
                return None;
            }
            // Any exponent beyond this over- or underflows whatever the digits.
            let n = e
                .bytes()
                .fold(0i64, |n, b| (n * 10 + i64::from(b - b'0')).min(1 << 40));
            if minus { -n } else { n }
        }
    };
    let mut digits: Vec<u8> = whole
        .bytes()
        .chain(fraction.bytes())
        .map(|b| b - b'0')
        .collect();
    let leading = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..leading);
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let point = whole.len() as i64 - leading as i64 + exponent;
    Some((negative, digits, point))
}

fn sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

/// Whether 0.DIGITS × 10^point rounds to zero: at most half the smallest subnormal, 2^-1075
/// (exactly half rounds to the even zero).
fn rounds_to_zero(digits: &[u8], point: i64) -> bool {
    match point {
        p if p < -323 => true,
        -323 => compare(digits, point, &power_digits(1, 5, 1075), -323) != Ordering::Greater,
        _ => false,
    }
}

/// Whether 0.DIGITS × 10^point rounds to infinity: at least halfway between `f64::MAX` and 2^1024
/// (exactly halfway rounds up, `f64::MAX` being odd).
fn rounds_to_infinity(digits: &[u8], point: i64) -> bool {
    match point {
        p if p > 309 => true,
        309 => compare(digits, point, &power_digits((1 << 54) - 1, 2, 970), 309) != Ordering::Less,
        _ => false,
    }
}

/// Compares 0.A × 10^a_point with 0.B × 10^b_point, for digit strings without leading zeros.
fn compare(a: &[u8], a_point: i64, b: &[u8], b_point: i64) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        (false, false) => {}
    }
    a_point.cmp(&b_point).then_with(|| {
        let len = a.len().max(b.len());
        let digit = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
        (0..len)
            .map(|i| digit(a, i).cmp(&digit(b, i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    })
}

/// The decimal digits of `start × factor^times`, most significant first.
fn power_digits(start: u64, factor: u32, times: u32) -> Vec<u8> {
    const BASE: u64 = 1_000_000_000;
    let mut limbs = vec![start % BASE, start / BASE];
    for _ in 0..times {
        let mut carry = 0;
        for limb in &mut limbs {
            let n = *limb * u64::from(factor) + carry;
            *limb = n % BASE;
            carry = n / BASE;
        }
        if carry > 0 {
            limbs.push(carry);
        }
    }
    let mut digits = Vec::with_capacity(limbs.len() * 9);
    for limb in limbs.iter().rev() {
        let mut n = *limb;
        let mut nine = [0u8; 9];
        for d in nine.iter_mut().rev() {
            *d = (n % 10) as u8;
            n /= 10;
        }
        digits.extend_from_slice(&nine);
    }
    let leading = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..leading);
    digits
}

#[cfg(test)]
mod tests {
    use super::ceil_to_u64;

    /// What the header parser did before: core's float parser.
    fn reference(text: &str) -> Option<u64> {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.ceil() as u64)
    }

    fn check(text: &str) {
        assert_eq!(ceil_to_u64(text), reference(text), "{text:?}");
    }

    #[test]
    fn edges_of_f64_rounding_match_core() {
        let cases = [
            "1.2",
            "0.5",
            "2",
            "2.0",
            "+3.25",
            ".5",
            "5.",
            "-0",
            "-0.0",
            "-0.4",
            "-1e-400",
            "1e3",
            "1E3",
            "1e+3",
            "25e-1",
            "0.000",
            "000.010",
            "2.00000000000000000001",
            "2.0000000000000004",
            "2.0000000000000005",
            "4503599627370495.5",
            "4503599627370496.5",
            "9007199254740991.5",
            "9007199254740993",
            "9007199254740993.0",
            "9007199254740993.000001",
            "9007199254740995.0",
            "18014398509481986.0",
            "18014398509481987.0",
            "18014398509481987.00001",
            "18446744073709550591.9",
            "18446744073709550592.0",
            "18446744073709551615.5",
            "18446744073709552000.5",
            "1e19",
            "1.5e19",
            "1e20",
            "1e21",
            "1e308",
            "1.7976931348623157e308",
            "1.7976931348623158e308",
            "1.7976931348623159e308",
            "1e309",
            "1e99999999999999999999",
            "1e-99999999999999999999",
            "1e-323",
            "4.9e-324",
            "2.4703282292062327e-324",
            "2.4703282292062328e-324",
            "2.47032822920623272088284396434110686182529901307162382212792841250337753635104375932649918180817996189898282347722858865463328355177969898199387398005390939063150356595155702263922908583924491051844359318028499365361525003193704576782492193656236698636584807570015857692699037063119282795585513329278343384093519780155312465972635795746227664652728272200563740064854999770965994704540208281662262378573934507363390079677619305775067401763246736009689513405355374585166611342237666786041621596804619144672918403005300575308490487653917113865916462395249126236538818796362393732804238910186723484976682350898633885879256283027559956575244555072551893136908362547791869486679949683240497058210285131854513962138377228261454376934125320985913276672363281255e-324",
            "2.47032822920623272088284396434110686182529901307162382212792841250337753635104375932649918180817996189898282347722858865463328355177969898199387398005390939063150356595155702263922908583924491051844359318028499365361525003193704576782492193656236698636584807570015857692699037063119282795585513329278343384093519780155312465972635795746227664652728272200563740064854999770965994704540208281662262378573934507363390079677619305775067401763246736009689513405355374585166611342237666786041621596804619144672918403005300575308490487653917113865916462395249126236538818796362393732804238910186723484976682350898633885879256283027559956575244555072551893136908362547791869486679949683240497058210285131854513962138377228261454376934125320985913276672363281250e-324",
            "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497791.9",
            "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792",
            "",
            ".",
            "-",
            "+",
            "e5",
            "1e",
            "1e+",
            "1.2.3",
            "1_0",
            "0x10",
            " 1",
            "inf",
            "NaN",
            "infinity",
            "-inf",
            "1,5",
            "١",
        ];
        for text in cases {
            check(text);
        }
    }

    // Generated numbers near the places where `f64` rounding decides (native only, as proptest).
    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_number_matches_core(
                sign in "[+-]?",
                whole in "[0-9]{0,22}",
                fraction in "[0-9]{0,30}",
                exponent in proptest::option::of(-340i32..340),
            ) {
                let mut text = format!("{sign}{whole}.{fraction}");
                if let Some(e) = exponent {
                    text.push_str(&format!("e{e}"));
                }
                super::check(&text);
            }

            #[test]
            fn integers_and_halves_near_powers_of_two_match_core(
                bits in 50u32..66,
                offset in -40i64..40,
                fraction in prop_oneof!["", "0", "5", "49999999999", "50000000001", "9999"],
            ) {
                let n = (1i128 << bits) + i128::from(offset);
                super::check(&format!("{n}.{fraction}"));
            }
        }
    }
}
