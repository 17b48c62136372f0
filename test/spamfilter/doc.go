// Package spamfilter holds the end-to-end test of the spam classifier on a
// real 3-node cluster (test/cluster): a user trains it over IMAP by moving
// synthetic spam into Junk and ham out of it, through every node; every
// node's replicated counts then hold the same trainings, and mail sent
// through any node's MX port is sorted by them (Junk, $Junk and
// X-Spam-Status: Yes above the threshold; INBOX and X-Spam-Status: No
// below it), with the same score whichever node received it; moving a
// trained message out of Junk and back moves its training over instead of
// counting it twice. It also measures the accuracy on held-out mail and
// the state's size per trained message.
//
// It has no non-test code besides this file. It never sleeps for a fixed
// time: it polls with deadlines, and its synthetic corpus comes from a
// seeded generator, so its figures are the same every run.
package spamfilter
