//! Compile-time behaviour of `#[idempotent]`: every supported shape compiles, and every misuse
//! fails with a message that says what to write instead (the `.stderr` files are those messages).

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
