//! The `calculate` tool's arithmetic: `+ - * / % ^`, parentheses, unary signs and decimals, in
//! `f64`.
//!
//! A small recursive-descent parser rather than a crate: `evalexpr` (the well-kept candidate)
//! evaluates `7/2` to `3` when both operands are integers and accepts a much larger language
//! (strings, booleans, assignments, functions) that would have to be filtered out again; what is
//! wanted here is plain school arithmetic with errors that say where the expression went wrong.
//!
//! Grammar (`^` binds tightest and groups to the right; `-2^2` is `-(2^2)`):
//!
//! ```text
//! expr    = term (("+" | "-") term)*
//! term    = unary (("*" | "/" | "%") unary)*
//! unary   = ("+" | "-") unary | power
//! power   = primary ("^" unary)?
//! primary = number | "(" expr ")"
//! number  = digits ["." digits] | "." digits
//! ```

use std::fmt;

/// Longest expression accepted, in characters.
pub const MAX_LENGTH: usize = 1000;
/// Deepest nesting of parentheses and signs; the parser recurses once per level, so this bounds
/// its stack use whatever the input.
const MAX_DEPTH: usize = 64;

/// Why an expression has no value; the message is meant for the person or model that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalcError {
    /// Nothing but whitespace.
    Empty,
    /// Longer than [`MAX_LENGTH`].
    TooLong(usize),
    /// Nested deeper than the parser allows.
    TooDeep,
    /// A character that is not part of the language, at a 1-based position.
    UnexpectedChar(char, usize),
    /// A well-formed token in the wrong place, at a 1-based position.
    UnexpectedToken(String, usize),
    /// The expression stopped where more was needed.
    UnexpectedEnd,
    /// A `(` without its `)`, at a 1-based position.
    UnclosedParen(usize),
    /// `/` or `%` by zero.
    DivisionByZero,
    /// The result (or a step) is too large for a number.
    Overflow,
    /// The result is not a real number, e.g. `(-8)^0.5`.
    NotReal,
}

impl fmt::Display for CalcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalcError::Empty => write!(f, "the expression is empty"),
            CalcError::TooLong(n) => write!(
                f,
                "the expression is {n} characters long; at most {MAX_LENGTH} are accepted"
            ),
            CalcError::TooDeep => write!(
                f,
                "the expression is nested too deeply (at most {MAX_DEPTH} levels)"
            ),
            CalcError::UnexpectedChar(c, at) => write!(
                f,
                "unexpected character {c:?} at position {at}; only numbers, + - * / % ^ and \
                 parentheses are understood"
            ),
            CalcError::UnexpectedToken(token, at) => {
                write!(f, "unexpected {token:?} at position {at}")
            }
            CalcError::UnexpectedEnd => write!(f, "the expression ends too early"),
            CalcError::UnclosedParen(at) => {
                write!(f, "the parenthesis opened at position {at} is never closed")
            }
            CalcError::DivisionByZero => write!(f, "division by zero"),
            CalcError::Overflow => write!(f, "the result is too large"),
            CalcError::NotReal => write!(f, "the result is not a real number"),
        }
    }
}

impl std::error::Error for CalcError {}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Number(f64),
    Op(char),
    Open,
    Close,
}

/// A token and its 1-based position.
type Spanned = (Token, usize);

fn tokenize(input: &str) -> Result<Vec<Spanned>, CalcError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        match c {
            c if c.is_whitespace() => i += 1,
            '0'..='9' | '.' => {
                let start = i;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                if i < chars.len() && chars[i] == '.' {
                    i += 1;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                let text: String = chars[start..i].iter().collect();
                // "." alone, or "1." followed by nothing: not a number.
                if text == "." || text.ends_with('.') {
                    return Err(CalcError::UnexpectedToken(text, at));
                }
                let value = text
                    .parse::<f64>()
                    .map_err(|_| CalcError::UnexpectedToken(text, at))?;
                // Hundreds of digits parse as infinity.
                finite(value)?;
                tokens.push((Token::Number(value), at));
            }
            '+' | '-' | '*' | '/' | '%' | '^' => {
                tokens.push((Token::Op(c), at));
                i += 1;
            }
            '(' => {
                tokens.push((Token::Open, at));
                i += 1;
            }
            ')' => {
                tokens.push((Token::Close, at));
                i += 1;
            }
            other => return Err(CalcError::UnexpectedChar(other, at)),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Spanned>,
    next: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<Spanned> {
        self.tokens.get(self.next).copied()
    }

    fn bump(&mut self) -> Option<Spanned> {
        let token = self.peek();
        self.next += 1;
        token
    }

    fn descend(&mut self) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CalcError::TooDeep);
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<f64, CalcError> {
        let mut value = self.term()?;
        while let Some((Token::Op(op @ ('+' | '-')), _)) = self.peek() {
            self.bump();
            let rhs = self.term()?;
            value = if op == '+' { value + rhs } else { value - rhs };
            finite(value)?;
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<f64, CalcError> {
        let mut value = self.unary()?;
        while let Some((Token::Op(op @ ('*' | '/' | '%')), _)) = self.peek() {
            self.bump();
            let rhs = self.unary()?;
            value = match op {
                '*' => value * rhs,
                _ if rhs == 0.0 => return Err(CalcError::DivisionByZero),
                '/' => value / rhs,
                _ => value % rhs,
            };
            finite(value)?;
        }
        Ok(value)
    }

    fn unary(&mut self) -> Result<f64, CalcError> {
        match self.peek() {
            Some((Token::Op(sign @ ('+' | '-')), _)) => {
                self.bump();
                self.descend()?;
                let value = self.unary()?;
                self.depth -= 1;
                Ok(if sign == '-' { -value } else { value })
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<f64, CalcError> {
        let base = self.primary()?;
        if let Some((Token::Op('^'), _)) = self.peek() {
            self.bump();
            self.descend()?;
            // `unary`, not `primary`: `2^-1` is a half, and `2^3^2` is `2^(3^2)`.
            let exponent = self.unary()?;
            self.depth -= 1;
            let value = base.powf(exponent);
            if value.is_nan() {
                return Err(CalcError::NotReal);
            }
            if base == 0.0 && exponent < 0.0 {
                return Err(CalcError::DivisionByZero);
            }
            finite(value)?;
            return Ok(value);
        }
        Ok(base)
    }

    fn primary(&mut self) -> Result<f64, CalcError> {
        match self.bump() {
            Some((Token::Number(value), _)) => Ok(value),
            Some((Token::Open, at)) => {
                self.descend()?;
                let value = self.expr()?;
                self.depth -= 1;
                match self.bump() {
                    Some((Token::Close, _)) => Ok(value),
                    Some((token, at)) => Err(unexpected(token, at)),
                    None => Err(CalcError::UnclosedParen(at)),
                }
            }
            Some((token, at)) => Err(unexpected(token, at)),
            None => Err(CalcError::UnexpectedEnd),
        }
    }
}

fn unexpected(token: Token, at: usize) -> CalcError {
    let text = match token {
        Token::Number(n) => n.to_string(),
        Token::Op(c) => c.to_string(),
        Token::Open => "(".into(),
        Token::Close => ")".into(),
    };
    CalcError::UnexpectedToken(text, at)
}

fn finite(value: f64) -> Result<f64, CalcError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CalcError::Overflow)
    }
}

/// The value of `input`.
pub fn evaluate(input: &str) -> Result<f64, CalcError> {
    let length = input.chars().count();
    if length > MAX_LENGTH {
        return Err(CalcError::TooLong(length));
    }
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err(CalcError::Empty);
    }
    let mut parser = Parser {
        tokens,
        next: 0,
        depth: 0,
    };
    let value = parser.expr()?;
    if let Some((token, at)) = parser.peek() {
        return Err(unexpected(token, at));
    }
    // `-0` reads oddly in an answer.
    Ok(if value == 0.0 { 0.0 } else { value })
}

/// `value` for people: no binary noise in the last digits (`0.1+0.2` shows as `0.3`), and
/// scientific notation for very large or very small magnitudes.
pub fn format_number(value: f64) -> String {
    let magnitude = value.abs();
    if value == 0.0 {
        return "0".into();
    }
    if !(1e-6..1e15).contains(&magnitude) {
        return format!("{value:e}");
    }
    // Twelve significant digits hide the rounding error of binary fractions while keeping every
    // digit a person would type.
    let decimals = (11 - magnitude.log10().floor() as i32).clamp(0, 17) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(input: &str) -> f64 {
        evaluate(input).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    #[test]
    fn precedence_and_associativity_follow_school_arithmetic() {
        assert_eq!(value("12*(3+4)"), 84.0);
        assert_eq!(value("2+3*4"), 14.0);
        assert_eq!(value("(2+3)*4"), 20.0);
        assert_eq!(value("10-4-3"), 3.0);
        assert_eq!(value("100/10/5"), 2.0);
        assert_eq!(value("2^3^2"), 512.0);
        assert_eq!(value("2*3^2"), 18.0);
        assert_eq!(value("-2^2"), -4.0);
        assert_eq!(value("(-2)^2"), 4.0);
        assert_eq!(value("2^-1"), 0.5);
        assert_eq!(value("17 % 5 + 1"), 3.0);
        assert_eq!(value("7/2"), 3.5);
    }

    #[test]
    fn signs_decimals_and_whitespace() {
        assert_eq!(value("-3"), -3.0);
        assert_eq!(value("--3"), 3.0);
        assert_eq!(value("+3 - -2"), 5.0);
        assert_eq!(value("1.5 * .5"), 0.75);
        assert_eq!(value("  ( 1 )  "), 1.0);
        assert_eq!(value("-(2+3)"), -5.0);
        assert_eq!(value("0*-1"), 0.0);
        assert!(value("0*-1").is_sign_positive());
    }

    #[test]
    fn errors_say_what_and_where() {
        assert_eq!(evaluate("1/0"), Err(CalcError::DivisionByZero));
        assert_eq!(evaluate("5 % (2-2)"), Err(CalcError::DivisionByZero));
        assert_eq!(evaluate("0^-1"), Err(CalcError::DivisionByZero));
        assert_eq!(evaluate(""), Err(CalcError::Empty));
        assert_eq!(evaluate("   "), Err(CalcError::Empty));
        assert_eq!(evaluate("2 +"), Err(CalcError::UnexpectedEnd));
        assert_eq!(evaluate("(1+2"), Err(CalcError::UnclosedParen(1)));
        assert_eq!(
            evaluate("1+2)"),
            Err(CalcError::UnexpectedToken(")".into(), 4))
        );
        assert_eq!(
            evaluate("2(3)"),
            Err(CalcError::UnexpectedToken("(".into(), 2))
        );
        assert_eq!(evaluate("2 x 3"), Err(CalcError::UnexpectedChar('x', 3)));
        assert_eq!(
            evaluate("1..2"),
            Err(CalcError::UnexpectedToken("1.".into(), 1))
        );
        assert_eq!(
            evaluate("*2"),
            Err(CalcError::UnexpectedToken("*".into(), 1))
        );
        assert_eq!(evaluate("10^400"), Err(CalcError::Overflow));
        assert_eq!(evaluate("(-8)^0.5"), Err(CalcError::NotReal));
        let message = evaluate("2 $ 3").unwrap_err().to_string();
        assert!(
            message.contains("'$'") && message.contains("position 3"),
            "{message}"
        );
    }

    #[test]
    fn input_is_bounded_in_length_and_depth() {
        let long = "1+".repeat(600) + "1";
        assert_eq!(evaluate(&long), Err(CalcError::TooLong(1201)));
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(evaluate(&deep), Err(CalcError::TooDeep));
        assert_eq!(evaluate(&"-".repeat(500)), Err(CalcError::TooDeep));
        assert_eq!(evaluate(&"9".repeat(400)), Err(CalcError::Overflow));
        let fine = format!("{}1{}", "(".repeat(50), ")".repeat(50));
        assert_eq!(value(&fine), 1.0);
    }

    #[test]
    fn numbers_are_written_for_people() {
        assert_eq!(format_number(84.0), "84");
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(format_number(3.5), "3.5");
        assert_eq!(format_number(-2.25), "-2.25");
        assert_eq!(format_number(1.0 / 3.0), "0.333333333333");
        assert_eq!(format_number(123456789.125), "123456789.125");
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(1e300), "1e300");
        assert_eq!(format_number(1.5e-9), "1.5e-9");
    }
}
