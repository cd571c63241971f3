mod common;

#[tokio::test]
async fn smoke() {
    let s = common::Server::start().await;
    let _ = s.stop().await;
}
