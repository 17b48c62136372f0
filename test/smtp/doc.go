// Package smtp holds the end-to-end tests of the SMTP server: real 3-node
// in-process clusters driven with go-smtp's client, a raw client for what
// that client will not send, and swaks where it is installed. The tests
// assert what a sender or a mailbox owner would notice; none asserts timing.
package smtp
