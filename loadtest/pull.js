// 100 virtual users pulling a cached multi-layer image: manifest by tag, then config and every
// layer, verifying each size. Thresholds: no failed request, every check passes, and the p99 of a
// whole-image pull stays under 1 s. BASE, REPO, TAG come from the environment (run.sh sets them).
import http from 'k6/http';
import { check } from 'k6';
import { Trend } from 'k6/metrics';

const BASE = __ENV.BASE;
const REPO = __ENV.REPO || 'load/img';
const TAG = __ENV.TAG || 'latest';
const imagePull = new Trend('image_pull_ms', true);

export const options = {
  scenarios: {
    pull: {
      executor: 'constant-vus',
      vus: Number(__ENV.VUS || 100),
      duration: __ENV.DURATION || '30s',
    },
  },
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    image_pull_ms: [`p(99)<${__ENV.P99_MS || 1000}`],
  },
  summaryTrendStats: ['avg', 'p(50)', 'p(90)', 'p(99)', 'max'],
};

const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

export default function () {
  const start = Date.now();
  const m = http.get(`${BASE}/v2/${REPO}/manifests/${TAG}`, { headers: { Accept: ACCEPT }, tags: { kind: 'manifest' } });
  if (!check(m, { 'manifest 200': (r) => r.status === 200 })) return;
  const manifest = m.json();
  const blobs = [manifest.config].concat(manifest.layers);
  const reqs = blobs.map((d) => ['GET', `${BASE}/v2/${REPO}/blobs/${d.digest}`, null, { tags: { kind: 'blob' }, responseType: 'none' }]);
  const res = http.batch(reqs);
  res.forEach((r, i) => {
    check(r, {
      'blob 200': (x) => x.status === 200,
      'blob size': (x) => Number(x.headers['Content-Length']) === blobs[i].size,
    });
  });
  imagePull.add(Date.now() - start);
}
