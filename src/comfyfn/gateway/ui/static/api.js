// The web app's calls to /ui/api: the session cookie authenticates, the X-Comfyfn-UI header
// marks them as the app's own (no other site can send it).
const HEADERS = { "X-Comfyfn-UI": "1" };

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.param = body?.error?.param;
  }
}

/** fetch `path`; a JSON `body` is sent as JSON, FormData as a form; answers parsed JSON. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: { ...HEADERS }, credentials: "same-origin" };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export function submitJob(workflow, params) {
  return api("/ui/api/jobs", { method: "POST", body: { workflow, params } });
}

export function upload(blob, name = "image.png") {
  const form = new FormData();
  form.append("file", blob, name);
  return api("/ui/api/uploads", { method: "POST", body: form });
}

const FINAL = ["succeeded", "failed", "cancelled"];

/** Follow a job's server-sent events: onEvent(kind, data) for each; resolves with the final
 * job. EventSource reconnects by itself (with Last-Event-ID); a stream that cannot reconnect
 * falls back to one read of the job. */
export function follow(jobId, onEvent) {
  return new Promise((resolve) => {
    const source = new EventSource(`/ui/api/jobs/${encodeURIComponent(jobId)}/events`);
    const finish = (job) => {
      source.close();
      resolve(job);
    };
    for (const kind of ["queued", "progress", "preview", ...FINAL]) {
      source.addEventListener(kind, (event) => {
        const data = JSON.parse(event.data);
        onEvent(kind, data);
        if (FINAL.includes(kind)) finish(data);
      });
    }
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) return; // reconnecting by itself
      api(`/ui/api/jobs/${encodeURIComponent(jobId)}`)
        .then((job) => {
          onEvent(FINAL.includes(job.state) ? job.state : "lost", job);
          finish(job);
        })
        .catch(() => {
          onEvent("lost", null);
          finish(null);
        });
    };
  });
}

export function randomSeed() {
  const words = new Uint32Array(2);
  crypto.getRandomValues(words);
  return (words[0] & 0x1fffff) * 2 ** 32 + words[1]; // below 2**53
}
