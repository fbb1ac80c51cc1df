//! Go `flag` package command-line syntax.
//!
//! nsqd is started by scripts written for Go's flag rules, so we accept
//! exactly its forms: `-f=v`, `--f=v`, `-f v`, `--f v`, bare switches
//! (`-f` = true, never consuming the next argument), `--` as terminator,
//! and `-h`/`-help` for usage. Unlike Go, a positional argument is an error.

use super::error::OptionsError;

/// Whether a flag takes a separate value argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Boolean-like: bare means `true`; a value only via `-f=v`.
    Switch,
    /// Needs a value: `-f=v` or `-f v`.
    Value,
}

/// One recognised command-line item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<'a> {
    /// A defined flag; `value` is `None` for a bare switch.
    Flag {
        /// Flag name without dashes.
        name: &'a str,
        /// Explicit or following value.
        value: Option<&'a str>,
    },
    /// `-h`, `-help` (when not defined as flags): print usage.
    Help,
}

/// Iterator over the flags in `args` (argv without argv[0]); stops after the
/// first error or help request, like Go's `FlagSet.Parse`.
pub struct Tokens<'a, F> {
    args: &'a [String],
    pos: usize,
    lookup: F,
    done: bool,
}

impl<'a, F: Fn(&str) -> Option<Arity>> Tokens<'a, F> {
    /// `lookup` says whether a flag name exists and how it takes its value.
    pub fn new(args: &'a [String], lookup: F) -> Self {
        Tokens {
            args,
            pos: 0,
            lookup,
            done: false,
        }
    }

    fn next_token(&mut self) -> Option<Result<Token<'a>, OptionsError>> {
        let arg = self.args.get(self.pos)?.as_str();
        self.pos += 1;
        if arg.len() < 2 || !arg.starts_with('-') {
            return Some(Err(OptionsError::Positional(arg.to_string())));
        }
        let dashes = if arg.as_bytes()[1] == b'-' { 2 } else { 1 };
        if arg == "--" {
            // Terminator: anything after it would be positional.
            let rest = self.args.get(self.pos)?;
            return Some(Err(OptionsError::Positional(rest.clone())));
        }
        let body = &arg[dashes..];
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Some(Err(OptionsError::BadSyntax(arg.to_string())));
        }
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let token = match (self.lookup)(name) {
            None if name == "help" || name == "h" => Ok(Token::Help),
            None => Err(OptionsError::UnknownFlag(name.to_string())),
            Some(Arity::Switch) => Ok(Token::Flag {
                name,
                value: inline,
            }),
            Some(Arity::Value) => match inline {
                Some(value) => Ok(Token::Flag {
                    name,
                    value: Some(value),
                }),
                None => match self.args.get(self.pos) {
                    Some(value) => {
                        self.pos += 1;
                        Ok(Token::Flag {
                            name,
                            value: Some(value),
                        })
                    }
                    None => Err(OptionsError::MissingValue(name.to_string())),
                },
            },
        };
        Some(token)
    }
}

impl<'a, F: Fn(&str) -> Option<Arity>> Iterator for Tokens<'a, F> {
    type Item = Result<Token<'a>, OptionsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_token();
        self.done = !matches!(item, Some(Ok(Token::Flag { .. })));
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<Arity> {
        match name {
            "sw" => Some(Arity::Switch),
            "val" => Some(Arity::Value),
            _ => None,
        }
    }

    fn run(args: &[&str]) -> Vec<Result<Token<'static>, OptionsError>> {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let leaked: &'static [String] = Box::leak(owned.into_boxed_slice());
        Tokens::new(leaked, lookup).collect()
    }

    fn flag(
        name: &'static str,
        value: Option<&'static str>,
    ) -> Result<Token<'static>, OptionsError> {
        Ok(Token::Flag { name, value })
    }

    #[test]
    fn value_forms() {
        for args in [
            &["-val=x"][..],
            &["--val=x"],
            &["-val", "x"],
            &["--val", "x"],
        ] {
            assert_eq!(run(args), vec![flag("val", Some("x"))], "{args:?}");
        }
        // A value argument is taken even if it looks like a flag, and may be empty.
        assert_eq!(run(&["-val", "-sw"]), vec![flag("val", Some("-sw"))]);
        assert_eq!(run(&["-val="]), vec![flag("val", Some(""))]);
        assert_eq!(run(&["-val=a=b"]), vec![flag("val", Some("a=b"))]);
    }

    #[test]
    fn switch_forms_do_not_consume() {
        assert_eq!(
            run(&["-sw", "--sw=false"]),
            vec![flag("sw", None), flag("sw", Some("false"))]
        );
        assert_eq!(
            run(&["--sw", "false"]),
            vec![
                flag("sw", None),
                Err(OptionsError::Positional("false".into()))
            ]
        );
    }

    #[test]
    fn errors_and_help() {
        assert_eq!(
            run(&["-nope"]),
            vec![Err(OptionsError::UnknownFlag("nope".into()))]
        );
        assert_eq!(
            run(&["--nope=1"]),
            vec![Err(OptionsError::UnknownFlag("nope".into()))]
        );
        assert_eq!(
            run(&["---sw"]),
            vec![Err(OptionsError::BadSyntax("---sw".into()))]
        );
        assert_eq!(
            run(&["-=1"]),
            vec![Err(OptionsError::BadSyntax("-=1".into()))]
        );
        assert_eq!(
            run(&["-val"]),
            vec![Err(OptionsError::MissingValue("val".into()))]
        );
        assert_eq!(run(&["x"]), vec![Err(OptionsError::Positional("x".into()))]);
        assert_eq!(run(&["-"]), vec![Err(OptionsError::Positional("-".into()))]);
        assert_eq!(run(&["-sw", "--"]), vec![flag("sw", None)]);
        assert_eq!(
            run(&["--", "-sw"]),
            vec![Err(OptionsError::Positional("-sw".into()))]
        );
        assert_eq!(run(&["-h", "-nope"]), vec![Ok(Token::Help)]);
        assert_eq!(run(&["--help"]), vec![Ok(Token::Help)]);
        assert_eq!(
            run(&["-nope", "-h"]),
            vec![Err(OptionsError::UnknownFlag("nope".into()))]
        );
    }
}
