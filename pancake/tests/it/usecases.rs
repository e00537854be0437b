//! Every pancake use case, each on a fresh SQLite and a fresh PostgreSQL
//! database through real HTTP. The use cases themselves are data in each
//! module's `cases.rs`; `pancake story` prints them.

hearth::use_case_tests! {
    account => pancake::app(), "account";
    home => pancake::app(), "home";
    status => pancake::app(), "status";
    members => pancake::app(), "members";
    likes => pancake::app(), "likes";
    alerts => pancake::app(), "alerts";
}

#[test]
fn every_route_and_event_is_covered_by_a_use_case() {
    let docs = pancake::app().docs().unwrap();
    let (summary, gaps) = hearth::usecase::docs::summary(&docs);
    assert!(gaps.is_empty(), "{summary}");
}
