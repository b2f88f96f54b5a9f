//! A typed Connect client of Profusion's RPCs: binary protobuf over HTTP/1.1 or h2c, optional
//! gzip, the tenant header. The end-to-end tests and the benchmark harness both call the server
//! through it.

use prost::Message;

/// A failed call: the HTTP status and the body the server answered (0 and the transport error
/// when no answer came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl std::error::Error for CallError {}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct ConnectClient {
    base: String,
    tenant: Option<String>,
    gzip: bool,
    http: reqwest::Client,
}

impl ConnectClient {
    /// A client of the server at `base` (`http://host:port`), over HTTP/1.1.
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            tenant: None,
            gzip: false,
            http: reqwest::Client::new(),
        }
    }

    /// Calls as `tenant` (`X-Scope-OrgID`).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sends request bodies gzip-compressed.
    pub fn gzip(mut self, on: bool) -> Self {
        self.gzip = on;
        self
    }

    /// Uses this HTTP client (its pool, HTTP/2 settings and timeouts).
    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// Calls the unary RPC at `path` (`/querier.v1.QuerierService/SelectSeries`).
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, CallError> {
        let body = self.send(path, req.encode_to_vec()).await?;
        Resp::decode(body.as_slice()).map_err(|e| CallError {
            status: 200,
            body: format!("undecodable answer: {e}"),
        })
    }

    /// POSTs an encoded request body to `path`; the answer's body on success.
    pub async fn send(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/proto");
        if let Some(t) = &self.tenant {
            req = req.header("x-scope-orgid", t);
        }
        let body = if self.gzip {
            req = req.header("content-encoding", "gzip");
            crate::profiles::gzip(&body)
        } else {
            body
        };
        let transport = |e: reqwest::Error| CallError {
            status: 0,
            body: e.to_string(),
        };
        let resp = req.body(body).send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport)?.to_vec();
        if status == 200 {
            Ok(bytes)
        } else {
            Err(CallError {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        }
    }

    /// `push.v1.PusherService/Push`.
    pub async fn push(
        &self,
        req: &profusion_proto::push::v1::PushRequest,
    ) -> Result<profusion_proto::push::v1::PushResponse, CallError> {
        self.call("/push.v1.PusherService/Push", req).await
    }

    /// A `querier.v1.QuerierService` method.
    pub async fn querier<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp, CallError> {
        self.call(&format!("/querier.v1.QuerierService/{method}"), req)
            .await
    }
}
