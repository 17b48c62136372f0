package ops

import "fmt"

// MinTokenLength is the shortest admin token a node accepts. The token is
// the only key to the admin API; 16 random characters (as `mailcluster
// dev` and deploy/compose-init.sh generate, with room to spare) cannot be
// guessed at the rate the API throttles wrong ones.
const MinTokenLength = 16

// CheckToken refuses an admin token too short to be safe. An empty token
// is fine: it turns the admin API off.
func CheckToken(token string) error {
	if token != "" && len(token) < MinTokenLength {
		return fmt.Errorf("admin_token is too short (%d characters): use at least %d random characters, e.g. head -c 24 /dev/urandom | base64", len(token), MinTokenLength)
	}
	return nil
}
