// Package session issues and verifies the gateway's own short-lived session
// tokens: Ed25519-signed JWTs minted after a directory or OIDC login and
// checked by the proxy on every request.
//
// Signing keys live as PKCS#8 PEM files named <kid>.pem in one directory,
// which several replicas may share (a mounted Secret or volume). Every
// replica signs with the key whose kid sorts greatest, so they agree without
// talking to each other, and every key in the directory verifies, so a
// rotation never logs anyone out. Key files readable by group or others are
// refused, so mount such a Secret with defaultMode 0400 (or 0600).
package session
