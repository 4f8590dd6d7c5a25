//! Code generation: the function with its signature as written and its body wrapped.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn};

use crate::args::{Args, Concurrent, Dur};
use crate::validate::{Func, Key, Shape, validate};

/// Expands `#[idempotent(args)] item`. On any error the function is emitted unchanged beside
/// the errors, so the rest of the crate (and the IDE) still sees it.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            let err = syn::Error::new(
                Span::call_site(),
                "`#[idempotent]` goes on an `async fn` with a body (a free function or a method)",
            );
            return with_error(err, item);
        }
    };
    let args: Args = match syn::parse2(args) {
        Ok(args) => args,
        Err(err) => return with_error(err, item.into_token_stream()),
    };
    match validate(&args, &item) {
        Ok(func) => generate(&args, &item, &func),
        Err(err) => with_error(err, item.into_token_stream()),
    }
}

fn with_error(err: syn::Error, item: TokenStream) -> TokenStream {
    let err = err.into_compile_error();
    quote!(#item #err)
}

/// `tokens` (a path: no groups) with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}

/// A local only generated code can name.
fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

fn generate(args: &Args, item: &ItemFn, func: &Func<'_>) -> TokenStream {
    let krate = match &args.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::idem_core),
    };
    let private = quote!(#krate::__private);
    let ret = func.ret;
    let store = local("__idem_store");
    let options = local("__idem_options");
    let key = local("__idem_key");
    let fingerprint = local("__idem_fingerprint");
    let body = local("__idem_body");
    let fake = local("__idem_ret");
    let decoder = local("__idem_decoder");

    let scope = match &args.scope {
        Some(lit) => lit.to_token_stream(),
        None => {
            let name = item.sig.ident.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #name))
        }
    };
    let duration = |dur: &Dur| match dur {
        Dur::Literal(lit, millis) => {
            quote_spanned!(lit.span()=> #private::Duration::from_millis(#millis))
        }
        Dur::Expr(expr) => quote_spanned!(expr.span()=> #expr),
    };
    let mut settings = TokenStream::new();
    if let Some(ttl) = &args.ttl {
        let ttl = duration(ttl);
        settings.extend(quote!(.ttl(#ttl)));
    }
    if let Some(lease) = &args.lease {
        let lease = duration(lease);
        settings.extend(quote!(.lease(#lease)));
    }
    if let Some(wait) = &args.wait {
        let wait = duration(wait);
        settings.extend(quote!(.wait(#wait)));
    }
    if args.concurrent == Some(Concurrent::Reject) {
        settings.extend(quote!(.concurrent(#private::Concurrency::Reject)));
    }

    let store_expr = match &args.store {
        Some(expr) => quote_spanned!(expr.span()=> &(#expr)),
        None => quote!(#private::default_store()),
    };
    let key_expr = match &func.key {
        Key::Fingerprint => quote!(::core::option::Option::None),
        Key::Display(expr) => quote_spanned!(expr.span()=> #private::key(&(#expr))),
        Key::Tuple(parts) => {
            let parts = parts
                .iter()
                .map(|part| quote_spanned!(part.span()=> .part(&(#part))));
            quote!(::core::option::Option::Some(#private::KeyBuilder::new() #(#parts)* .finish()))
        }
    };
    let hashed = match &args.fingerprint {
        Some(expr) => vec![quote_spanned!(expr.span()=> .arg(&(#expr)))],
        None => func
            .fingerprinted
            .iter()
            .map(|(ident, ty)| quote_spanned!(ty.span()=> .arg(&#ident)))
            .collect(),
    };
    // Replays of a `Clone` outcome clone the value decoded once (auto-ref picks it); a return
    // type that names a lifetime cannot be `'static`, so it always decodes.
    // (The transactional mode reads records from PostgreSQL, which keeps no decoded values.)
    let decoder_let = if args.transaction.is_some() {
        TokenStream::new()
    } else if names_a_lifetime(ret) {
        quote!(let #decoder = #private::ByJson;)
    } else {
        quote! {
            let #decoder = {
                use #private::{ViaClone as _, ViaJson as _};
                (&&#private::Decoder::<#ret>::new()).__idem_decoder()
            };
        }
    };
    let policy = match &args.replay_err {
        Some(decides) => quote_spanned!(decides.span()=> #private::replay_err::<#ret>(#decides)),
        None => quote!(#private::NoReplay),
    };
    // Spanned at the return type, path included, so unmet bounds on `T` and `E` are reported
    // there rather than on the attribute.
    let private_at_ret = respan(private.clone(), ret.span());
    let call = match &args.transaction {
        None => quote_spanned! {ret.span()=>
            #private_at_ret::call::<#ret, _, _, _, _>(#store.__idem_store(), #options, #key, #fingerprint, #policy, #decoder, #body).await
        },
        // The key record is written on the caller's transaction, and the body gets it back as
        // the closure's argument, under the same name.
        Some(tx) => quote_spanned! {ret.span()=>
            #private_at_ret::call_in_transaction::<#ret, _, _, _>(
                #store.__idem_store(), &mut *#tx, #options, #key, #fingerprint, #policy, #body,
            ).await
        },
    };

    let inner_block = match &func.shape {
        Shape::Async(block) => block.to_token_stream(),
        Shape::AsyncTrait(inner) => inner.block.to_token_stream(),
    };
    let body_head = match &func.transaction {
        None => quote!(async move),
        // Typed as declared: the closure is built before the call that would infer it.
        Some((tx, ty)) => quote!(async move |#tx: #ty|),
    };
    let wrapped = quote! {
        let #store = #store_expr;
        let #options = #private::Options::new(#scope) #settings;
        let #key: ::core::option::Option<::std::string::String> = #key_expr;
        let #fingerprint = #private::FingerprintBuilder::new() #(#hashed)* .finish();
        #decoder_let
        let #body = #body_head {
            // Fixes the body's type to the declared one, so `?` and `return` infer as written.
            #[allow(unreachable_code, clippy::diverging_sub_expression)]
            if false {
                let #fake: #ret = loop {};
                return #fake;
            }
            #inner_block
        };
        {
            use #private::AsStore as _;
            #call
        }
    };

    let attrs = &item.attrs;
    let vis = &item.vis;
    let sig = &item.sig;
    match &func.shape {
        Shape::Async(_) => quote! {
            #(#attrs)*
            #vis #sig {
                #wrapped
            }
        },
        Shape::AsyncTrait(inner) => {
            // Keep everything `#[async_trait]` wrote before the final `Box::pin(async move {..})`.
            let stmts = &item.block.stmts[..item.block.stmts.len() - 1];
            let async_token = &inner.async_token;
            let capture = &inner.capture;
            quote! {
                #(#attrs)*
                #vis #sig {
                    #(#stmts)*
                    ::std::boxed::Box::pin(#async_token #capture {
                        #wrapped
                    })
                }
            }
        }
    }
}

/// Whether a type names a lifetime or a reference anywhere (`Cow<'a, str>`, `&str`).
fn names_a_lifetime(ty: &syn::Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tree| match tree {
            proc_macro2::TokenTree::Group(group) => walk(group.stream()),
            proc_macro2::TokenTree::Punct(punct) => {
                punct.as_char() == '\'' || punct.as_char() == '&'
            }
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}
