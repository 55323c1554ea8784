// An S3-compatible server on a folder (s3rver), with MinIO's root user as its only key:
// `server <folder>` as MinIO's image takes it, on port 9000. As MinIO, it reads the user and
// password from MINIO_ROOT_USER_FILE and MINIO_ROOT_PASSWORD_FILE when they are set (a path,
// or a name in /run/secrets; the content trimmed), else from MINIO_ROOT_USER and
// MINIO_ROOT_PASSWORD.
'use strict';
const fs = require('fs');
const path = require('path');
const S3rver = require('s3rver');
const account = require('s3rver/lib/models/account');

function setting(name) {
  const file = process.env[`${name}_FILE`];
  if (!file) return process.env[name];
  const inSecrets = path.join('/run/secrets', file);
  const found = fs.existsSync(inSecrets) && fs.statSync(inSecrets).isFile() ? inSecrets : file;
  return fs.readFileSync(found, 'utf8').trim();
}

const [command, directory] = process.argv.slice(2);
if (command !== 'server' || !directory) {
  console.error('usage: server <folder>');
  process.exit(2);
}
const user = setting('MINIO_ROOT_USER') || 'minioadmin';
const password = setting('MINIO_ROOT_PASSWORD');
if (!password) {
  console.error('MINIO_ROOT_PASSWORD or MINIO_ROOT_PASSWORD_FILE is required');
  process.exit(2);
}
account.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
account.DUMMY_ACCOUNT.createKeyPair(user, password);
new S3rver({ directory, address: '0.0.0.0', port: 9000, silent: true, vhostBuckets: false })
  .run()
  .then(() => console.log(`S3 on :9000, data in ${directory}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
