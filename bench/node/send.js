'use strict';
/*
 * Nodemailer's run of the benchmark, in a process of its own.
 *
 *   node bench/node/send.js '<json options>'
 *
 * Options (all given by bench/smtp_throughput.py, which owns the workload):
 *   port, messages, connections: where to send, how many, and the pool's maxConnections;
 *   sender, subject, body: the workload; subject and body use {name} and {n} placeholders;
 *   ehloName, recipientPrefix, recipientDomain, namePrefix: how message i is addressed.
 *
 * It builds each message's options fresh (Nodemailer composes the MIME at send time), hands
 * all of them to a pooled transport at once (the pool queues them over its connections), and
 * prints one JSON line in the same shape as bench/py_clients.py:
 *   {"client", "status": "ok"|"failed"|"unavailable", "messages", "accepted", "seconds",
 *    "cpu_seconds", "message_bytes", "errors", "note"}
 * A message counts as accepted when Nodemailer reports its one recipient accepted and the
 * final reply is 250. "seconds" covers building, connecting, sending and closing, not the
 * start of node; "cpu_seconds" is the process's CPU time (user + system) over the same span. Exit status: 0 ok, 1 failed, 3 unavailable, 2 bad usage.
 */

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const EXIT_UNAVAILABLE = 3;
const MAX_ERRORS = 5;

function report(out) {
  process.stdout.write(JSON.stringify(out) + '\n');
}

function fill(template, values) {
  // Only the workload's own placeholders; anything else is left as written.
  return template.replace(/\{(name|n)\}/g, (_, key) => String(values[key]));
}

async function main() {
  let opts;
  try {
    opts = JSON.parse(process.argv[2]);
  } catch (err) {
    process.stderr.write(`usage: node send.js '<json options>' (${err.message})\n`);
    return EXIT_USAGE;
  }
  const client = opts.connections === 1 ? 'nodemailer-1' : 'nodemailer-pool';
  const out = {
    client,
    status: 'ok',
    messages: opts.messages,
    accepted: 0,
    seconds: null,
    cpu_seconds: null,
    message_bytes: null,
    errors: [],
    note: null,
  };
  const error = (text) => {
    if (out.errors.length < MAX_ERRORS) out.errors.push(text);
  };

  let nodemailer;
  let MailComposer;
  try {
    nodemailer = require('nodemailer');
    MailComposer = require('nodemailer/lib/mail-composer');
  } catch (err) {
    out.status = 'unavailable';
    out.note = `nodemailer is not installed (run scripts/setup-bench): ${err.message}`;
    report(out);
    return EXIT_UNAVAILABLE;
  }

  const recipient = (i) => `${opts.recipientPrefix}${i}@${opts.recipientDomain}`;
  const mailFor = (i) => {
    const values = { name: `${opts.namePrefix}${i}`, n: i };
    return {
      from: opts.sender,
      to: recipient(i),
      subject: fill(opts.subject, values),
      text: fill(opts.body, values),
    };
  };

  const start = process.hrtime.bigint();
  const cpuStart = process.cpuUsage();
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port: opts.port,
    name: opts.ehloName,
    secure: false,
    ignoreTLS: true, // the sink offers no STARTTLS; say so rather than let it probe
    pool: true,
    maxConnections: opts.connections,
    // The default (100) closes and reopens each connection every 100 messages; a bulk
    // sender tunes that away, and so does the benchmark, so the peer is at its best.
    maxMessages: Infinity,
    connectionTimeout: 30000,
    socketTimeout: 30000,
  });
  const sends = [];
  for (let i = 0; i < opts.messages; i += 1) {
    const to = recipient(i);
    sends.push(
      transport.sendMail(mailFor(i)).then(
        (info) => {
          const accepted = info.accepted || [];
          if (accepted.length === 1 && accepted[0] === to && /^250[ -]/.test(info.response)) {
            out.accepted += 1;
          } else {
            error(`message ${i}: accepted ${JSON.stringify(accepted)}, reply ${info.response}`);
          }
        },
        (err) => error(`message ${i}: ${err.message}`),
      ),
    );
  }
  await Promise.all(sends);
  transport.close();
  out.seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpuStart);
  out.cpu_seconds = (cpu.user + cpu.system) / 1e6;

  // Message 0 as the pool would have put it on the wire, measured after the clock stopped.
  out.message_bytes = await new Promise((resolve) => {
    new MailComposer(mailFor(0)).compile().build((err, buf) => resolve(err ? null : buf.length));
  });
  if (out.accepted !== out.messages) out.status = 'failed';
  report(out);
  return out.status === 'ok' ? EXIT_OK : EXIT_FAILED;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`${err.stack || err}\n`);
    process.exitCode = EXIT_FAILED;
  },
);
