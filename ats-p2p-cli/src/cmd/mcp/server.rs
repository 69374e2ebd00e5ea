//! The MCP server: the handler rmcp drives over stdio, and its lifecycle (start the node,
//! serve until the client hangs up or a signal comes, then close the node cleanly).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use ats_p2p::Node;
use ats_p2p::events::FailureKind;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt as _, tool_handler};

use super::McpArgs;
use super::registry::Registry;
use super::schemas::failure;
use crate::args::CommonArgs;
use crate::cmd::node::{self, stop_exit};
use crate::exit::{Exit, Failure};
use crate::output::Output;
use crate::signals::StopSignals;

/// How long the node's close may wait for tool calls still holding it after the client left.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// What the model is told about the server as a whole.
const INSTRUCTIONS: &str = "\
Send and receive files peer to peer with other AI agents. Files go directly between the two \
machines over an end-to-end encrypted connection (holepunched through NATs, or through a blind \
relay that sees only ciphertext), pinned to the peer's public key and verified by SHA-256; ATS \
only carries the offer. Call whoami for this agent's actor id and key. To send: send_file \
{path, to}. To receive: list_offers, then accept_offer {transfer_id} or reject_offer. \
transfer_status and list_transfers show how transfers went. Errors carry a stable code.";

/// What the tools share: the node and what the server remembers.
#[derive(Debug)]
pub(crate) struct Context {
    /// The node.
    pub(crate) node: Arc<Node>,
    /// Offers waiting and transfers seen.
    pub(crate) registry: Arc<Registry>,
    /// The default channel.
    pub(crate) channel: String,
    /// Where accepted files go (canonical).
    pub(crate) save_dir: PathBuf,
    /// Offers are accepted without asking.
    pub(crate) auto_accept: bool,
}

/// The MCP handler.
#[derive(Debug, Clone)]
pub(crate) struct P2pServer {
    pub(crate) ctx: Arc<Context>,
    tool_router: ToolRouter<Self>,
}

impl P2pServer {
    fn new(ctx: Context) -> Self {
        Self {
            ctx: Arc::new(ctx),
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for P2pServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("ats-p2p", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    /// Calls the tool; arguments that do not fit its schema come back as a tool error with
    /// the code `invalid_arguments` (the model can fix them), like every other failure.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = ToolCallContext::new(self, request, context);
        match self.tool_router.call(call).await? {
            CallToolResponse::Complete(r)
                if r.is_error == Some(true) && r.structured_content.is_none() =>
            {
                let text = r
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok(failure("invalid_arguments", FailureKind::Usage, text, None).into())
            }
            other => Ok(other),
        }
    }
}

/// Serves MCP on stdin/stdout until the client closes it (exit 0) or a signal comes.
pub(crate) async fn run(out: &Output, common: &CommonArgs, args: McpArgs) -> Result<Exit, Failure> {
    let save_dir = args.save_dir();
    let save_dir = std::fs::create_dir_all(&save_dir)
        .and_then(|()| save_dir.canonicalize())
        .map_err(|e| {
            Failure::new(
                Exit::Error,
                anyhow::Error::new(e).context(format!(
                    "cannot use the save directory {}",
                    save_dir.display()
                )),
            )
        })?;
    let mut stop = StopSignals::install()?;
    let config = node::node_config(common, &args.node, args.max_size)?;
    let node = Arc::new(node::start(out, config, &mut stop).await?);
    let channel = common.signal.channel.clone();
    let registry = Registry::new(args.node.timeout.0);
    let auto_dir = args.auto_accept.then(|| save_dir.clone());
    registry
        .watch(&node, &channel, auto_dir)
        .map_err(|e| Failure::new(Exit::Error, e))?;
    let server = P2pServer::new(Context {
        node: Arc::clone(&node),
        registry: Arc::clone(&registry),
        channel,
        save_dir,
        auto_accept: args.auto_accept,
    });
    let result = match server.serve(rmcp::transport::stdio()).await {
        Ok(service) => {
            let cancel = service.cancellation_token();
            let waiting = service.waiting();
            tokio::pin!(waiting);
            tokio::select! {
                r = &mut waiting => r.map(|_| Exit::Success).map_err(|e| {
                    Failure::new(Exit::Error, anyhow!("the MCP service failed: {e}"))
                }),
                s = stop.wait() => {
                    cancel.cancel();
                    let _ = waiting.await;
                    Ok(stop_exit(s))
                }
            }
        }
        Err(e) => Err(Failure::new(
            Exit::Error,
            anyhow!("the MCP client did not initialize: {e}"),
        )),
    };
    // Pending offers hold the node's internals; the node closes once no tool call holds it.
    registry.forget_offers();
    close(node).await;
    // Only now: transfers still running ended with a reason on ATS first.
    registry.stop();
    result
}

/// Destroys the node once the last tool call let go of it (or gives up after [`CLOSE_WAIT`]:
/// the process is ending anyway).
async fn close(mut node: Arc<Node>) {
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        match Arc::try_unwrap(node) {
            Ok(node) => return node.destroy().await,
            Err(back) if Instant::now() < deadline => {
                node = back;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                tracing::debug!("tool calls still hold the node; leaving it unclosed");
                return;
            }
        }
    }
}
