// Package kuborpc answers Kubo's RPC API (/api/v0/...) from the cluster, so
// that the tools people already have for Kubo (`ipfs --api`, Kubo's RPC
// clients, curl scripts) add into the cluster and read back from it. There
// is no Kubo behind it: every command it knows, it answers itself, through
// the same api.Backend as the REST API; every other command gets Kubo's
// error shape with one sentence that says shoal does not support it.
//
// The endpoint runs on its own listener (config kubo_rpc.listen, off by
// default) inside an api.Server, so it has the REST API's auth, TLS, Host
// and Origin checks and deadlines. docs/kubo-rpc.md lists the commands and
// where they differ from Kubo's.
//
// # Wire format, as go-ipfs-cmds writes it
//
// Every command is a POST to /api/v0/NAME; its positional arguments are
// repeated arg= query parameters, its options query parameters of their
// own, and a file argument the body, multipart/form-data. GET answers 405,
// as Kubo does.
//
// One value (id, version, pin/add, pin/rm, pin/ls) is one JSON object,
// Content-Type application/json. A stream of values (add) is one JSON
// object per line with X-Chunked-Output: 1. Bytes (cat) are text/plain
// with X-Stream-Output: 1 and X-Content-Length. All announce the trailer
// X-Stream-Error, which carries an error that happened after the first
// byte; an error before it is the body {"Message", "Code", "Type":"error"}
// with status 400 for a bad request (Code 1) and 500 otherwise (Code 0),
// as Kubo's CLI expects. Kubo answers an unknown command with a plain
// "404 page not found", which its CLI turns into "Command not found.";
// shoal answers 400 in the JSON shape, so that the CLI prints shoal's
// sentence naming the command it does not support.
package kuborpc
