//! The relay's front: HTTP/1.1 in (hyper, as a node's front), frames out
//! over its one TLS connection to the far end, answers back to the HTTP
//! task waiting for each.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use http_body_util::{BodyDataStream, Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use restpipe_tests::SERVER_NAME;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::frame::{self, Kind, Outgoing};
use super::{READ_BYTES, WINDOW_PIECES};

/// What the front answers the app with.
type Answer = http::Response<Either<Full<Bytes>, Pieces>>;

/// What the far end answered.
enum Answered {
    Whole(Bytes),
    /// Pieces still coming.
    Stream(mpsc::Receiver<Bytes>),
}

/// A frame for the writer, and the upload's window place it holds until
/// it is written.
struct Out {
    id: u64,
    kind: Kind,
    payload: Bytes,
    place: Option<OwnedSemaphorePermit>,
}

/// The front's side of its one connection to the far end.
pub(super) struct Link {
    /// HTTP tasks waiting for their answers, by id.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answered>>>,
    /// Requests sent and not yet answered (the writer batches while any
    /// other is).
    in_flight: AtomicUsize,
    next_id: AtomicU64,
    frames: mpsc::UnboundedSender<Out>,
    /// Upload pieces queued and not yet written, at most [`WINDOW_PIECES`].
    window: Arc<Semaphore>,
}

impl Link {
    /// Connects to the far end, and starts the writer and the reader.
    pub(super) async fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Arc<Self>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from(SERVER_NAME)?, tcp)
            .await
            .context("relay: TLS handshake (front)")?;
        let (reader, writer) = tokio::io::split(tls);
        let (frames, queued) = mpsc::unbounded_channel();
        let link = Arc::new(Self {
            waiting: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            frames,
            window: Arc::new(Semaphore::new(WINDOW_PIECES)),
        });
        tokio::spawn(write_frames(queued, writer, Arc::clone(&link)));
        tokio::spawn(read_answers(reader, Arc::clone(&link)));
        Ok(link)
    }

    /// Relays one request: its line, and its body if it has one.
    async fn relay(&self, request: http::Request<Incoming>) -> Answer {
        let line = format!("{} {}", request.method(), request.uri());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(id, answer);
        }
        let mut in_flight = InFlight::new(self, id);
        let sent = if request.method() == http::Method::POST {
            self.upload(id, Bytes::from(line), request.into_body())
                .await
        } else {
            self.send(id, Kind::Whole, Bytes::from(line), None)
        };
        let answered = if sent { answered.await.ok() } else { None };
        in_flight.answered = answered.is_some();
        drop(in_flight);
        match answered {
            Some(Answered::Whole(answer)) => json(Either::Left(Full::new(answer))),
            Some(Answered::Stream(pieces)) => json(Either::Right(Pieces(pieces))),
            None => {
                let mut response = json(Either::Left(Full::new(Bytes::new())));
                *response.status_mut() = http::StatusCode::BAD_GATEWAY;
                response
            }
        }
    }

    /// Sends an upload: its line, each piece as hyper hands it over (at most
    /// [`WINDOW_PIECES`] not yet written), and its end.
    async fn upload(&self, id: u64, line: Bytes, body: Incoming) -> bool {
        if !self.send(id, Kind::Open, line, None) {
            return false;
        }
        let mut pieces = BodyDataStream::new(body);
        while let Some(piece) = pieces.next().await {
            let Ok(piece) = piece else {
                return false;
            };
            let Ok(place) = Arc::clone(&self.window).acquire_owned().await else {
                return false;
            };
            if !self.send(id, Kind::Piece, piece, Some(place)) {
                return false;
            }
        }
        self.send(id, Kind::End, Bytes::new(), None)
    }

    fn send(
        &self,
        id: u64,
        kind: Kind,
        payload: Bytes,
        place: Option<OwnedSemaphorePermit>,
    ) -> bool {
        let out = Out {
            id,
            kind,
            payload,
            place,
        };
        self.frames.send(out).is_ok()
    }
}

/// One request between being sent and answered. However it ends (the app
/// may hang up, dropping the request's future), it is no longer counted in
/// flight, and one left unanswered leaves no entry behind, here or at the
/// far end (an `End` closes an upload cut short; the answer it draws finds
/// nobody waiting and is dropped).
struct InFlight<'a> {
    link: &'a Link,
    id: u64,
    answered: bool,
}

impl<'a> InFlight<'a> {
    fn new(link: &'a Link, id: u64) -> Self {
        link.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            link,
            id,
            answered: false,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.link.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.answered {
            return;
        }
        if let Ok(mut waiting) = self.link.waiting.lock() {
            waiting.remove(&self.id);
        }
        self.link.send(self.id, Kind::End, Bytes::new(), None);
    }
}

/// A streamed answer's pieces, as they arrive.
struct Pieces(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|piece| piece.map(|piece| Ok(hyper::body::Frame::data(piece))))
    }
}

fn json<B>(body: B) -> http::Response<B> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves HTTP/1.1 on `listener`, each request relayed over `link`.
pub(super) async fn serve(listener: TcpListener, link: Arc<Link>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let link = Arc::clone(&link);
        tokio::spawn(async move {
            let service = service_fn(|request| {
                let link = Arc::clone(&link);
                async move { Ok::<_, Infallible>(link.relay(request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Writes the queued frames, all that are ready in one TLS write; while
/// other requests await their answers it yields once first, so that the
/// frames of the tasks woken with this one join the write (the pipe's
/// writer does the same).
async fn write_frames(
    mut queued: mpsc::UnboundedReceiver<Out>,
    mut writer: impl AsyncWrite + Unpin,
    link: Arc<Link>,
) -> anyhow::Result<()> {
    let mut outgoing = Outgoing::default();
    let mut places = Vec::new();
    while let Some(first) = queued.recv().await {
        if link.in_flight.load(Ordering::Relaxed) > 1 {
            tokio::task::yield_now().await;
        }
        let mut next = Some(first);
        while let Some(out) = next {
            outgoing.push(out.id, out.kind, out.payload);
            places.push(out.place);
            next = queued.try_recv().ok();
        }
        outgoing.write_to(&mut writer).await?;
        places.clear();
    }
    Ok(())
}

/// Reads the far end's answers and hands each to its waiting HTTP task; a
/// streamed answer's pieces go through a channel of [`WINDOW_PIECES`], so
/// a slow app holds the reader back rather than piling pieces up.
async fn read_answers(mut reader: impl AsyncRead + Unpin, link: Arc<Link>) -> anyhow::Result<()> {
    let mut buffer = BytesMut::with_capacity(READ_BYTES);
    let mut streams: HashMap<u64, mpsc::Sender<Bytes>> = HashMap::new();
    let waiting = |id| link.waiting.lock().ok().and_then(|mut map| map.remove(&id));
    loop {
        buffer.reserve(READ_BYTES);
        if reader.read_buf(&mut buffer).await? == 0 {
            return Ok(());
        }
        while let Some(frame) = frame::next(&mut buffer)? {
            match frame.kind {
                Kind::Whole => {
                    if let Some(waiting) = waiting(frame.id) {
                        let _ = waiting.send(Answered::Whole(frame.payload));
                    }
                }
                Kind::Piece => {
                    let sender = match streams.get(&frame.id) {
                        Some(sender) => Some(sender.clone()),
                        None => waiting(frame.id).and_then(|waiting| {
                            let (sender, pieces) = mpsc::channel(WINDOW_PIECES);
                            waiting.send(Answered::Stream(pieces)).ok()?;
                            streams.insert(frame.id, sender.clone());
                            Some(sender)
                        }),
                    };
                    // An app that went away: the rest of its pieces are dropped.
                    if let Some(sender) = sender
                        && sender.send(frame.payload).await.is_err()
                    {
                        streams.remove(&frame.id);
                    }
                }
                Kind::End => {
                    if streams.remove(&frame.id).is_none()
                        && let Some(waiting) = waiting(frame.id)
                    {
                        let _ = waiting.send(Answered::Whole(Bytes::new()));
                    }
                }
                Kind::Open => anyhow::bail!("relay: the far end opened an upload"),
            }
        }
    }
}
