//! The `#[idempotent]` attribute of [idem](https://docs.rs/idem-core). Depend on `idem-core`,
//! which re-exports it as `idem_core::idempotent`; this crate is its implementation.
//!
//! The macro is written in three stages: parsing the arguments (`args`), checking them against
//! the function (`validate`), and generating the wrapped body (`expand`).
#![warn(missing_docs, unreachable_pub)]

mod args;
mod duration;
mod expand;
mod validate;

#[cfg(test)]
mod snapshots;

use proc_macro::TokenStream;

/// Makes an `async fn` idempotent: see the documentation of `idem_core`, which re-exports it.
#[proc_macro_attribute]
pub fn idempotent(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(args.into(), item.into()).into()
}
