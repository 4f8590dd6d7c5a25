//! Expansion snapshots: what `#[idempotent]` generates for a few representative functions, so
//! any change to the generated code shows up in review. Update with `INSTA_UPDATE=always`.

use proc_macro2::TokenStream;
use quote::quote;

fn expand(args: TokenStream, item: TokenStream) -> String {
    let tokens = crate::expand::expand(args, item);
    let file: syn::File = syn::parse2(tokens).expect("the expansion parses as items");
    prettyplease::unparse(&file)
}

#[test]
fn payment_with_key_and_ttl() {
    insta::assert_snapshot!(expand(
        quote!(key = req.payment_id, ttl = "24h"),
        quote! {
            pub async fn charge(req: &ChargeRequest) -> Result<Receipt, PaymentError> {
                let receipt = gateway::charge(req.amount).await?;
                Ok(receipt)
            }
        },
    ));
}

#[test]
fn fingerprint_key_with_skipped_client() {
    insta::assert_snapshot!(expand(
        quote!(
            skip(client),
            concurrent = "reject",
            lease = "10s",
            wait = "2s"
        ),
        quote! {
            async fn handle(client: &Client, message: Message) -> Result<(), HandlerError> {
                client.apply(message).await
            }
        },
    ));
}

#[test]
fn method_with_store_tuple_key_and_replay_err() {
    insta::assert_snapshot!(expand(
        quote!(
            key = (self.tenant, order.id),
            store = self.store.clone(),
            scope = "orders::place",
            replay_err = OrderError::is_final,
            ttl = self.retention,
            crate = "my_app::idem",
        ),
        quote! {
            async fn place(&self, order: Order) -> Result<Placed, OrderError> {
                self.db.insert(&order).await
            }
        },
    ));
}

#[test]
fn async_trait_method() {
    insta::assert_snapshot!(expand(
        quote!(key = id),
        quote! {
            fn get<'life0, 'async_trait>(&'life0 self, id: u64) -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = Result<Item, Error>> + ::core::marker::Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move {
                    let __self = self;
                    let id = id;
                    let __ret: Result<Item, Error> = { __self.load(id).await };
                    #[allow(unreachable_code)]
                    __ret
                })
            }
        },
    ));
}

#[test]
fn a_bad_attribute_keeps_the_function_beside_the_error() {
    let out = crate::expand::expand(
        quote!(key = id, ttl = "soon"),
        quote!(
            async fn f(id: u64) -> Result<u8, E> {
                Ok(1)
            }
        ),
    );
    let text = out.to_string();
    assert!(
        text.contains("async fn f"),
        "the function is still emitted: {text}"
    );
    assert!(text.contains("compile_error"), "with the error: {text}");
}

#[test]
fn transactional_mode() {
    insta::assert_snapshot!(expand(
        quote!(key = order.reference, store = &self.store, transaction = tx),
        quote! {
            async fn place(&self, tx: &mut PgConnection, order: &Order) -> Result<Placed, OrderError> {
                sqlx::query("INSERT INTO orders (reference) VALUES ($1)").bind(&order.reference).execute(&mut *tx).await?;
                Ok(Placed)
            }
        },
    ));
}
