// Package api is the wire format of a node's operations API (/api/… on the
// operations listener): the JSON requests and answers the admin handlers
// decode and encode, and a small client that the CLI and the chaos driver
// use to call them.
//
// It imports only the standard library, never a package of this project:
// a client of the API links none of the server. Its types are a protocol
// between binaries of different versions (a CLI talks to a node during a
// rolling upgrade), so a field may be added but never renamed, retyped or
// removed, and an answer must decode with fields the reader does not know.
package api
