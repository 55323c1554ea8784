// An S3-compatible server on a folder (s3rver), with MinIO's root user as its only key:
// `server <folder>` as MinIO's image takes it, on port 9000.
'use strict';
const S3rver = require('s3rver');
const account = require('s3rver/lib/models/account');

const [command, directory] = process.argv.slice(2);
if (command !== 'server' || !directory) {
  console.error('usage: server <folder>');
  process.exit(2);
}
const user = process.env.MINIO_ROOT_USER || 'minioadmin';
const password = process.env.MINIO_ROOT_PASSWORD;
if (!password) {
  console.error('MINIO_ROOT_PASSWORD is required');
  process.exit(2);
}
account.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
account.DUMMY_ACCOUNT.createKeyPair(user, password);
new S3rver({ directory, address: '0.0.0.0', port: 9000, silent: true, vhostBuckets: false })
  .run()
  .then(() => console.log(`S3 on :9000, data in ${directory}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
