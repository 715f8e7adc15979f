//! Pages served from the binary itself, so they work on a network without internet access:
//! the board at `/` and GraphiQL (with its JavaScript and CSS) at `/graphql`.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// The board page.
pub const BOARD: &str = include_str!("../../assets/board.html");
/// The GraphiQL page, wired to `/graphql` and `/graphql/ws`.
pub const GRAPHIQL: &str = include_str!("../../assets/graphiql/index.html");

/// `GET /`: the board.
pub async fn board() -> Html<&'static str> {
    Html(BOARD)
}

/// shiplog's icon.
pub const FAVICON: &str = include_str!("../../assets/favicon.svg");

/// `GET /favicon.svg` and `/favicon.ico` (browsers ask for the latter on their own): the icon.
pub async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
        .into_response()
}

/// `GET /assets/graphiql/{file}`: GraphiQL's scripts and styles.
pub async fn graphiql_asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "graphiql.min.js" => (
            include_bytes!("../../assets/graphiql/graphiql.min.js"),
            "text/javascript",
        ),
        "graphiql.min.css" => (
            include_bytes!("../../assets/graphiql/graphiql.min.css"),
            "text/css",
        ),
        "react.production.min.js" => (
            include_bytes!("../../assets/graphiql/react.production.min.js"),
            "text/javascript",
        ),
        "react-dom.production.min.js" => (
            include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
            "text/javascript",
        ),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
