//! Parsing the arguments of `#[idempotent(...)]`.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitStr, Path, Token};

use crate::duration;

mod kw {
    syn::custom_keyword!(key);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(scope);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(fingerprint);
    syn::custom_keyword!(concurrent);
    syn::custom_keyword!(wait);
    syn::custom_keyword!(lease);
    syn::custom_keyword!(store);
    syn::custom_keyword!(replay_err);
    syn::custom_keyword!(transaction);
}

/// Every argument, in the order the docs list them.
pub(crate) const VALID: &str = "`key`, `ttl`, `scope`, `skip(..)`, `fingerprint`, `concurrent`, `wait`, `lease`, `store`, `replay_err`, `transaction`, `crate`";

/// Names users reach for that mean one of ours.
const RENAMED: &[(&str, &str)] = &[
    ("id", "key"),
    ("idempotency_key", "key"),
    ("expiry", "ttl"),
    ("expire", "ttl"),
    ("expires", "ttl"),
    ("retention", "ttl"),
    ("namespace", "scope"),
    ("name", "scope"),
    ("prefix", "scope"),
    ("ignore", "skip"),
    ("exclude", "skip"),
    ("hash", "fingerprint"),
    ("payload", "fingerprint"),
    ("on_conflict", "concurrent"),
    ("mode", "concurrent"),
    ("duplicates", "concurrent"),
    ("timeout", "wait"),
    ("wait_timeout", "wait"),
    ("lock", "lease"),
    ("lock_ttl", "lease"),
    ("backend", "store"),
    ("cache", "store"),
    ("replay_errors", "replay_err"),
    ("cache_err", "replay_err"),
    ("tx", "transaction"),
    ("krate", "crate"),
];

/// A duration argument: a checked literal or a `Duration` expression.
pub(crate) enum Dur {
    Literal(LitStr, u64),
    Expr(Expr),
}

/// What a duplicate does while the first call runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Concurrent {
    Wait,
    Reject,
}

#[derive(Default)]
pub(crate) struct Args {
    pub(crate) key: Option<Expr>,
    pub(crate) ttl: Option<Dur>,
    pub(crate) scope: Option<LitStr>,
    pub(crate) skip: Option<Vec<Ident>>,
    pub(crate) fingerprint: Option<Expr>,
    pub(crate) concurrent: Option<Concurrent>,
    pub(crate) wait: Option<Dur>,
    pub(crate) lease: Option<Dur>,
    pub(crate) store: Option<Expr>,
    pub(crate) replay_err: Option<Expr>,
    pub(crate) transaction: Option<Ident>,
    pub(crate) krate: Option<Path>,
    /// Arguments given twice, reported once parsing ends beside any other error.
    duplicates: Vec<syn::Error>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        let mut errors: Option<syn::Error> = None;
        let mut push = |err: syn::Error| match &mut errors {
            Some(all) => all.combine(err),
            None => errors = Some(err),
        };
        while !input.is_empty() {
            if let Err(err) = args.parse_one(input) {
                // The rest of the list cannot be trusted after a syntax error.
                push(err);
                break;
            }
            if input.is_empty() {
                break;
            }
            if let Err(err) = input.parse::<Token![,]>() {
                push(syn::Error::new(
                    err.span(),
                    "expected `,` between arguments",
                ));
                break;
            }
        }
        for err in args.duplicates.drain(..) {
            push(err);
        }
        match errors {
            Some(err) => Err(err),
            None => Ok(args),
        }
    }
}

impl Args {
    fn parse_one(&mut self, input: ParseStream<'_>) -> syn::Result<()> {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::key) {
            let span = input.parse::<kw::key>()?.span;
            let value = value(input, span, "key", "key = req.payment_id")?;
            set(&mut self.key, value, span, "key", &mut self.duplicates);
        } else if lookahead.peek(kw::ttl) {
            let span = input.parse::<kw::ttl>()?.span;
            let value = duration_value(input, span, "ttl", false)?;
            set(&mut self.ttl, value, span, "ttl", &mut self.duplicates);
        } else if lookahead.peek(kw::scope) {
            let span = input.parse::<kw::scope>()?.span;
            let lit = lit_value(input, span, "scope", "scope = \"payments::charge\"")?;
            if lit.value().is_empty() {
                return Err(syn::Error::new(lit.span(), "`scope` cannot be empty"));
            }
            set(&mut self.scope, lit, span, "scope", &mut self.duplicates);
        } else if lookahead.peek(kw::skip) {
            let span = input.parse::<kw::skip>()?.span;
            if !input.peek(syn::token::Paren) {
                return Err(syn::Error::new(
                    span,
                    "`skip` lists arguments in parentheses: `skip(client, pool)`",
                ));
            }
            let content;
            syn::parenthesized!(content in input);
            let names =
                Punctuated::<Ident, Token![,]>::parse_terminated_with(&content, Ident::parse_any)?;
            set(
                &mut self.skip,
                names.into_iter().collect(),
                span,
                "skip",
                &mut self.duplicates,
            );
        } else if lookahead.peek(kw::fingerprint) {
            let span = input.parse::<kw::fingerprint>()?.span;
            let value = value(
                input,
                span,
                "fingerprint",
                "fingerprint = (req.account, req.amount)",
            )?;
            set(
                &mut self.fingerprint,
                value,
                span,
                "fingerprint",
                &mut self.duplicates,
            );
        } else if lookahead.peek(kw::concurrent) {
            let span = input.parse::<kw::concurrent>()?.span;
            let lit = lit_value(input, span, "concurrent", "concurrent = \"reject\"")?;
            let mode = match lit.value().as_str() {
                "wait" => Concurrent::Wait,
                "reject" => Concurrent::Reject,
                other => {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                            "unknown `concurrent` mode \"{other}\"; expected \"wait\" or \"reject\""
                        ),
                    ));
                }
            };
            set(
                &mut self.concurrent,
                mode,
                span,
                "concurrent",
                &mut self.duplicates,
            );
        } else if lookahead.peek(kw::wait) {
            let span = input.parse::<kw::wait>()?.span;
            let value = duration_value(input, span, "wait", true)?;
            set(&mut self.wait, value, span, "wait", &mut self.duplicates);
        } else if lookahead.peek(kw::lease) {
            let span = input.parse::<kw::lease>()?.span;
            let value = duration_value(input, span, "lease", false)?;
            set(&mut self.lease, value, span, "lease", &mut self.duplicates);
        } else if lookahead.peek(kw::store) {
            let span = input.parse::<kw::store>()?.span;
            let value = value(input, span, "store", "store = &STORE")?;
            set(&mut self.store, value, span, "store", &mut self.duplicates);
        } else if lookahead.peek(kw::replay_err) {
            let span = input.parse::<kw::replay_err>()?.span;
            let value = value(
                input,
                span,
                "replay_err",
                "replay_err = PaymentError::is_final",
            )?;
            set(
                &mut self.replay_err,
                value,
                span,
                "replay_err",
                &mut self.duplicates,
            );
        } else if lookahead.peek(kw::transaction) {
            let span = input.parse::<kw::transaction>()?.span;
            eq(input, span, "transaction", "transaction = tx")?;
            let name: Ident = input.parse()?;
            set(
                &mut self.transaction,
                name,
                span,
                "transaction",
                &mut self.duplicates,
            );
        } else if lookahead.peek(Token![crate]) {
            let span = input.parse::<Token![crate]>()?.span;
            let lit = lit_value(input, span, "crate", "crate = \"my_crate::idem\"")?;
            let path = lit.parse_with(Path::parse_mod_style).map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    format!(
                        "`crate` must name a path, such as \"::idem_core\", not \"{}\"",
                        lit.value()
                    ),
                )
            })?;
            set(&mut self.krate, path, span, "crate", &mut self.duplicates);
        } else if input.peek(Ident::peek_any) {
            let name = input.call(Ident::parse_any)?;
            let hint = RENAMED
                .iter()
                .find(|(from, _)| name == from)
                .map(|(_, to)| format!("; did you mean `{to}`?"))
                .unwrap_or_default();
            return Err(syn::Error::new(
                name.span(),
                format!(
                    "unknown argument `{name}` of `#[idempotent]`; expected one of {VALID}{hint}"
                ),
            ));
        } else {
            return Err(lookahead.error());
        }
        Ok(())
    }
}

fn set<T>(slot: &mut Option<T>, value: T, span: Span, name: &str, errors: &mut Vec<syn::Error>) {
    if slot.is_some() {
        errors.push(syn::Error::new(
            span,
            format!("`{name}` is given twice; keep one"),
        ));
    } else {
        *slot = Some(value);
    }
}

fn eq(input: ParseStream<'_>, span: Span, name: &str, example: &str) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        Ok(())
    } else if input.is_empty() || input.peek(Token![,]) {
        // Point at the argument's name: there is no value to point at.
        Err(syn::Error::new(
            span,
            format!("`{name}` needs a value, such as `{example}`"),
        ))
    } else {
        Err(syn::Error::new(
            input.span(),
            format!("expected `=` after `{name}`, as in `{example}`"),
        ))
    }
}

fn value(input: ParseStream<'_>, span: Span, name: &str, example: &str) -> syn::Result<Expr> {
    eq(input, span, name, example)?;
    input.parse()
}

fn lit_value(input: ParseStream<'_>, span: Span, name: &str, example: &str) -> syn::Result<LitStr> {
    eq(input, span, name, example)?;
    if input.peek(LitStr) {
        input.parse()
    } else {
        Err(syn::Error::new(
            input.span(),
            format!("`{name}` takes a string literal, such as `{example}`"),
        ))
    }
}

fn duration_value(
    input: ParseStream<'_>,
    span: Span,
    name: &str,
    zero_ok: bool,
) -> syn::Result<Dur> {
    eq(input, span, name, &format!("{name} = \"30s\""))?;
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        let millis = duration::parse(&lit.value()).map_err(|why| {
            syn::Error::new(
                lit.span(),
                format!(
                    "invalid duration \"{}\" for `{name}`: {why}; write a number and a unit (`ms`, `s`, `m`, `h`, `d`), such as \"90s\" or \"1h30m\", or a `std::time::Duration` expression",
                    lit.value()
                ),
            )
        })?;
        if millis == 0 && !zero_ok {
            return Err(syn::Error::new(
                lit.span(),
                format!("`{name}` must be longer than zero"),
            ));
        }
        Ok(Dur::Literal(lit, millis))
    } else if input.peek(syn::LitInt) || input.peek(syn::LitFloat) {
        let lit: syn::Lit = input.parse()?;
        Err(syn::Error::new_spanned(
            &lit,
            format!(
                "a bare number has no unit: write `{name} = \"{}s\"` or a `std::time::Duration`",
                quote::ToTokens::to_token_stream(&lit)
            ),
        ))
    } else {
        Ok(Dur::Expr(input.parse()?))
    }
}
