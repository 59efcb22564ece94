// Mixed scenario: pullers as in pull.js plus pushers doing monolithic blob pushes and manifest
// pushes (each pusher writes its own tag). Same thresholds on errors and checks.
import http from 'k6/http';
import { check } from 'k6';
import crypto from 'k6/crypto';
import pull from './pull.js';

const BASE = __ENV.BASE;

export const options = {
  scenarios: {
    pull: { executor: 'constant-vus', exec: 'puller', vus: Number(__ENV.PULL_VUS || 50), duration: __ENV.DURATION || '30s' },
    push: { executor: 'constant-vus', exec: 'pusher', vus: Number(__ENV.PUSH_VUS || 10), duration: __ENV.DURATION || '30s' },
  },
  thresholds: { http_req_failed: ['rate==0'], checks: ['rate==1'] },
};

export function puller() {
  pull();
}

function randomBytes(n) {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(Math.random() * 256);
  return b.buffer;
}

export function pusher() {
  const repo = `load/push${__VU}`;
  const layer = randomBytes(16 * 1024 + Math.floor(Math.random() * 65536));
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', vu: __VU, iter: __ITER });
  const ld = 'sha256:' + crypto.sha256(layer, 'hex');
  const cd = 'sha256:' + crypto.sha256(config, 'hex');
  const r1 = http.post(`${BASE}/v2/${repo}/blobs/uploads/?digest=${ld}`, layer, { headers: { 'Content-Type': 'application/octet-stream' } });
  const r2 = http.post(`${BASE}/v2/${repo}/blobs/uploads/?digest=${cd}`, config, { headers: { 'Content-Type': 'application/octet-stream' } });
  check(r1, { 'layer pushed': (r) => r.status === 201 });
  check(r2, { 'config pushed': (r) => r.status === 201 });
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: ld, size: layer.byteLength }],
  });
  const r3 = http.put(`${BASE}/v2/${repo}/manifests/t${__ITER % 5}`, manifest, {
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  check(r3, { 'manifest pushed': (r) => r.status === 201 });
}
