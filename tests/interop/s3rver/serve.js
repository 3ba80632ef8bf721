'use strict';
// s3rver for tests/interop/test_s3rver.py, started by tests/interop/s3rver/server.py.
//
//   node serve.js <directory>
//
// Serves on 127.0.0.1, on a port the system picks, storing into <directory>; prints one line,
// "listening <port>", once it accepts connections. It exits when its standard input closes, so
// it never outlives the test run that started it, even one that was killed.
//
// s3rver knows one account, whose key pair is S3RVER/S3RVER. ASYNCLLM_S3RVER_ACCESS_KEY and
// ASYNCLLM_S3RVER_SECRET_KEY, if set, add a second pair to that account, so that the tests can
// use their own keys. (s3rver checks that a SigV4 request's key exists, not its signature.)
// NODE_PATH names the node_modules folder that holds s3rver (tests/interop/s3rver/install.py).

const S3rver = require('s3rver');
const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account');

const [directory] = process.argv.slice(2);
if (!directory) {
  process.stderr.write('usage: node serve.js <directory>\n');
  process.exit(2);
}

const accessKey = process.env.ASYNCLLM_S3RVER_ACCESS_KEY;
const secretKey = process.env.ASYNCLLM_S3RVER_SECRET_KEY;
if (accessKey && secretKey) {
  DUMMY_ACCOUNT.createKeyPair(accessKey, secretKey);
}

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

new S3rver({ address: '127.0.0.1', port: 0, directory, silent: true })
  .run()
  .then(({ port }) => process.stdout.write(`listening ${port}\n`))
  .catch(err => {
    process.stderr.write(`s3rver did not start: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
