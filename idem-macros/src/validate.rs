//! Semantic checks of the function and its arguments, before any code is generated.

use syn::{
    Block, Expr, ExprAsync, FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType,
    Stmt, Type, TypeParamBound,
};

use crate::args::Args;

/// The function, understood.
pub(crate) struct Func<'a> {
    pub(crate) shape: Shape<'a>,
    /// The declared `Result<T, E>` (or the `Output` of an `#[async_trait]` future).
    pub(crate) ret: &'a Type,
    /// Arguments hashed into the fingerprint, in order.
    pub(crate) fingerprinted: Vec<(&'a Ident, &'a Type)>,
    pub(crate) key: Key<'a>,
    /// `transaction = tx`: the argument and its declared type.
    pub(crate) transaction: Option<(&'a Ident, &'a Type)>,
}

pub(crate) enum Shape<'a> {
    /// `async fn`: the body is the function's block.
    Async(&'a Block),
    /// A method rewritten by `#[async_trait]`: `fn ... -> Pin<Box<dyn Future<Output = R> + ..>>`
    /// whose body ends in `Box::pin(async move { .. })`.
    AsyncTrait(&'a ExprAsync),
}

pub(crate) enum Key<'a> {
    /// No `key`: the fingerprint is the key.
    Fingerprint,
    /// `key = (a, b, ..)`: the parts joined.
    Tuple(Vec<&'a Expr>),
    /// `key = expr`: its `Display`.
    Display(&'a Expr),
}

struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }
}

/// Checks `item` against `args`, reporting every problem at once.
pub(crate) fn validate<'a>(args: &'a Args, item: &'a ItemFn) -> syn::Result<Func<'a>> {
    let mut errors = Errors(None);
    let sig = &item.sig;
    let name = &sig.ident;

    let shape_and_ret = if sig.asyncness.is_some() {
        match &sig.output {
            ReturnType::Type(_, ty) => Some((Shape::Async(&item.block), &**ty)),
            ReturnType::Default => {
                errors.push(syn::Error::new_spanned(
                    &sig.ident,
                    format!("`#[idempotent]` functions must return `Result<T, E>`; `{name}` returns `()`. Write `-> Result<T, E>` with `E: From<idem_core::Error>`"),
                ));
                None
            }
        }
    } else if let Some((inner, ret)) = async_trait_shape(item) {
        if let Some(tx) = &args.transaction {
            errors.push(syn::Error::new_spanned(
                tx,
                "`transaction = ..` works on a plain `async fn`, not inside `#[async_trait]`: call a helper `async fn` with the attribute from the trait method",
            ));
        }
        Some((Shape::AsyncTrait(inner), ret))
    } else {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!("`#[idempotent]` works on `async fn`; write `async fn {name}(..)`"),
        ));
        None
    };
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "`#[idempotent]` functions cannot be variadic",
        ));
    }

    // Arguments by name; destructured ones cannot be fingerprinted by name.
    let mut named: Vec<(&Ident, &Type)> = Vec::new();
    let mut unnamed: Vec<&FnArg> = Vec::new();
    for arg in &sig.inputs {
        if let FnArg::Typed(typed) = arg {
            match &*typed.pat {
                Pat::Ident(pat) if pat.subpat.is_none() => named.push((&pat.ident, &typed.ty)),
                _ => unnamed.push(arg),
            }
        }
    }
    let arg_list = || {
        if named.is_empty() {
            "it has no named arguments".to_string()
        } else {
            let names: Vec<String> = named
                .iter()
                .map(|(ident, _)| format!("`{ident}`"))
                .collect();
            format!("its arguments are {}", names.join(", "))
        }
    };
    let is_arg = |ident: &Ident| named.iter().any(|(name, _)| *name == ident);

    for skipped in args.skip.iter().flatten() {
        if skipped != "self" && !is_arg(skipped) {
            errors.push(syn::Error::new_spanned(
                skipped,
                format!(
                    "`skip({skipped})`: `{skipped}` is not an argument of `{name}`; {}",
                    arg_list()
                ),
            ));
        }
    }
    if let Some(tx) = &args.transaction {
        if !is_arg(tx) {
            errors.push(syn::Error::new_spanned(
                tx,
                format!(
                    "`transaction = {tx}`: `{tx}` is not an argument of `{name}`; {}",
                    arg_list()
                ),
            ));
        }
        if args.store.is_none() {
            errors.push(syn::Error::new_spanned(
                tx,
                "`transaction = ..` needs the PostgreSQL store it writes the key record with: add `store = <a PgStore>`",
            ));
        }
    }

    let key = match &args.key {
        None => Key::Fingerprint,
        Some(Expr::Tuple(tuple)) => Key::Tuple(tuple.elems.iter().collect()),
        Some(expr) => Key::Display(expr),
    };
    let key_exprs: Vec<&Expr> = match &key {
        Key::Fingerprint => Vec::new(),
        Key::Tuple(parts) => parts.clone(),
        Key::Display(expr) => vec![*expr],
    };
    for expr in key_exprs {
        if let Some(base) = base_variable(expr)
            && !is_arg(base)
        {
            errors.push(syn::Error::new_spanned(
                base,
                format!(
                    "`key` uses `{base}`, which is not an argument of `{name}`; {}",
                    arg_list()
                ),
            ));
        }
    }

    let skipped = |ident: &Ident| {
        args.skip.iter().flatten().any(|s| s == ident) || args.transaction.as_ref() == Some(ident)
    };
    let fingerprinted = if args.fingerprint.is_some() {
        Vec::new()
    } else {
        for arg in &unnamed {
            errors.push(syn::Error::new_spanned(
                arg,
                "`#[idempotent]` fingerprints every argument by name: bind this one to a name (`name: Type`), or choose what is hashed with `fingerprint = ..`",
            ));
        }
        named
            .iter()
            .copied()
            .filter(|(ident, _)| !skipped(ident))
            .collect()
    };

    match (errors.0, shape_and_ret) {
        (Some(err), _) => Err(err),
        (None, Some((shape, ret))) => Ok(Func {
            shape,
            ret,
            fingerprinted,
            key,
            transaction: args
                .transaction
                .as_ref()
                .and_then(|tx| named.iter().copied().find(|(name, _)| *name == tx)),
        }),
        (None, None) => unreachable!("a missing shape always records an error"),
    }
}

/// The variable an expression such as `req`, `req.id` or `req.ids[0].len()` starts from, when
/// it starts from a lower-case local name (constants and paths are left to the compiler).
fn base_variable(expr: &Expr) -> Option<&Ident> {
    match expr {
        Expr::Path(path) if path.qself.is_none() && path.path.segments.len() == 1 => {
            let ident = &path.path.segments[0].ident;
            let first = ident.to_string().chars().next()?;
            (first.is_lowercase() || first == '_')
                .then_some(ident)
                .filter(|i| *i != "self")
        }
        Expr::Field(field) => base_variable(&field.base),
        Expr::Index(index) => base_variable(&index.expr),
        Expr::MethodCall(call) => base_variable(&call.receiver),
        Expr::Reference(reference) => base_variable(&reference.expr),
        Expr::Paren(paren) => base_variable(&paren.expr),
        _ => None,
    }
}

/// Recognises a method already rewritten by `#[async_trait]`.
fn async_trait_shape(item: &ItemFn) -> Option<(&ExprAsync, &Type)> {
    let ReturnType::Type(_, ty) = &item.sig.output else {
        return None;
    };
    let output = future_output(ty)?;
    let Some(Stmt::Expr(Expr::Call(call), None)) = item.block.stmts.last() else {
        return None;
    };
    let Expr::Path(func) = &*call.func else {
        return None;
    };
    if func.path.segments.last()?.ident != "pin" || call.args.len() != 1 {
        return None;
    }
    match call.args.first()? {
        Expr::Async(inner) => Some((inner, output)),
        _ => None,
    }
}

/// `R` in `Pin<Box<dyn Future<Output = R> + ..>>`.
fn future_output(ty: &Type) -> Option<&Type> {
    let pin = last_generic(ty, "Pin")?;
    let boxed = last_generic(pin, "Box")?;
    let Type::TraitObject(object) = boxed else {
        return None;
    };
    object.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let segment = bound.path.segments.last()?;
        if segment.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(generics) = &segment.arguments else {
            return None;
        };
        generics.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
            _ => None,
        })
    })
}

/// The single type argument of a path type whose last segment is `name`.
fn last_generic<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let segment = path.path.segments.last()?;
    if segment.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(generics) = &segment.arguments else {
        return None;
    };
    generics.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    })
}
