package sieve

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/foxcpp/go-sieve/interp"
	"github.com/foxcpp/go-sieve/lexer"
	"github.com/foxcpp/go-sieve/parser"
)

// Limits on a script and on one run. A script over them does not compile,
// a run over them ends in a runtime error (and so an implicit keep).
const (
	// MaxScriptSize is the largest script accepted, in bytes.
	MaxScriptSize = 64 << 10
	// maxTokens bounds the lexer's output (the library's own default).
	maxTokens = 5000
	// maxNesting bounds blocks and tests inside each other.
	maxNesting = 15
	// MaxRedirects is the most redirect actions one run may take.
	MaxRedirects = 4
	// MaxFileInto is the most distinct mailboxes one run may file into.
	MaxFileInto = 32
	// maxVariables, maxVariableName and MaxVariableLen bound the
	// variables extension: how many, how long a name, how long a value
	// (longer values are cut, as RFC 5229 §3 allows).
	maxVariables    = 128
	maxVariableName = 32
	MaxVariableLen  = 4096
	// maxSteps bounds the header, envelope and action look-ups of one run:
	// a script without loops cannot take more than a few thousand, so
	// this only stops something gone wrong.
	maxSteps = 20000
	// maxFlags bounds the flags one delivery target gets.
	maxFlags = 32
	// maxMailboxName bounds a fileinto mailbox name (bytes).
	maxMailboxName = 512
)

// ErrCompile marks every error of Compile: the script is not valid here.
var ErrCompile = errors.New("sieve: script does not compile")

// supported are the extensions a script may require. The library
// implements all but vacation, which this package adds.
var supported = []string{
	"comparator-i;ascii-casemap",
	"comparator-i;ascii-numeric",
	"comparator-i;octet",
	"comparator-i;unicode-casemap",
	"encoded-character",
	"envelope",
	"fileinto",
	"imap4flags",
	"relational",
	"vacation",
	"variables",
}

// Extensions lists the extensions scripts may require, in the order the
// ManageSieve SIEVE capability should show them.
func Extensions() []string { return slices.Clone(supported) }

// Script is a compiled script. It is immutable and safe for concurrent
// Runs.
type Script struct {
	prog      *interp.Script
	marker    string // random, unguessable prefix of the hook keys
	exts      map[string]bool
	vacations []vacationSpec // by hook index
	actions   []actionSpec   // by hook index
}

// actionSpec is a keep, fileinto or discard, run by this package's hook.
type actionSpec struct {
	kind     byte // 'k' keep, 'f' fileinto, 'd' discard
	hasFlags bool // :flags given: use them, not the internal variable
}

// vacationSpec is what compile time knows of a vacation command; its
// strings reach the hook expanded by the library.
type vacationSpec struct {
	days      int
	hasHandle bool
}

// Hook keys: marker ":" index ":" field ":" value. The library expands
// variables and encoded characters in value as in any other string.
const (
	fieldAction   = 'a' // value: "" (one per action hook)
	fieldMailbox  = 'm'
	fieldFlag     = 'f'
	fieldVacation = 'v' // value: "" (one per vacation hook)
	fieldSubject  = 's'
	fieldFrom     = 'F'
	fieldAddress  = 'A'
	fieldHandle   = 'h'
	fieldReason   = 'r'
)

// Compile checks and compiles a script. Every error wraps ErrCompile and
// says what is wrong and, where known, at which line; ManageSieve's
// CHECKSCRIPT and PUTSCRIPT show it to the user.
func Compile(src []byte) (s *Script, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%w: %v", ErrCompile, r)
		}
	}()
	if len(src) > MaxScriptSize {
		return nil, fmt.Errorf("%w: the script is %d bytes, the limit is %d", ErrCompile, len(src), MaxScriptSize)
	}
	if !utf8.Valid(src) {
		return nil, fmt.Errorf("%w: the script is not valid UTF-8", ErrCompile)
	}
	toks, err := lexer.Lex(bytes.NewReader(src), &lexer.Options{MaxTokens: maxTokens})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCompile, err)
	}
	cmds, err := parser.Parse(lexer.NewStream(toks), &parser.Options{MaxBlockNesting: maxNesting, MaxTestNesting: maxNesting})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCompile, err)
	}
	var nonce [12]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	c := &compiler{s: &Script{marker: hex.EncodeToString(nonce[:]), exts: map[string]bool{}}}
	cmds, err = c.requires(cmds)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCompile, err)
	}
	cmds, err = c.block(cmds)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCompile, err)
	}
	prog, err := interp.LoadScript(cmds, &interp.Options{
		MaxRedirects:       MaxRedirects,
		MaxVariableCount:   maxVariables,
		MaxVariableNameLen: maxVariableName,
		MaxVariableLen:     MaxVariableLen,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCompile, err)
	}
	c.s.prog = prog
	return c.s, nil
}

type compiler struct{ s *Script }

func at(p lexer.Position, format string, args ...any) error {
	return fmt.Errorf("line %d: %s", p.Line, fmt.Sprintf(format, args...))
}

// requires reads the leading require commands (RFC 5228 §3.2: only
// before any other command) and hands the library the ones it knows.
func (c *compiler) requires(cmds []parser.Cmd) ([]parser.Cmd, error) {
	var out []parser.Cmd
	i := 0
	for ; i < len(cmds) && strings.EqualFold(cmds[i].Id, "require"); i++ {
		cmd := cmds[i]
		if len(cmd.Args) != 1 || len(cmd.Tests) != 0 || cmd.Block != nil {
			return nil, at(cmd.Position, "require takes one string or string list")
		}
		names, ok := stringsOf(cmd.Args[0])
		if !ok || len(names) == 0 {
			return nil, at(cmd.Position, "require takes one string or string list")
		}
		var keep []string
		for _, n := range names {
			if !slices.Contains(supported, n) {
				return nil, at(cmd.Position, "extension %q is not supported here (supported: %s)", n, strings.Join(supported, " "))
			}
			c.s.exts[n] = true
			if n != "vacation" {
				keep = append(keep, n)
			}
		}
		if len(keep) > 0 {
			cmd.Args = []parser.Arg{parser.StringListArg{Value: keep, Position: cmd.Position}}
			out = append(out, cmd)
		}
	}
	for _, cmd := range cmds[i:] {
		if err := noRequire(cmd); err != nil {
			return nil, err
		}
	}
	return append(out, cmds[i:]...), nil
}

func noRequire(cmd parser.Cmd) error {
	if strings.EqualFold(cmd.Id, "require") {
		return at(cmd.Position, "require must come before every other command")
	}
	for _, b := range cmd.Block {
		if err := noRequire(b); err != nil {
			return err
		}
	}
	return nil
}

func stringsOf(a parser.Arg) ([]string, bool) {
	switch a := a.(type) {
	case parser.StringArg:
		return []string{a.Value}, true
	case parser.StringListArg:
		return a.Value, true
	}
	return nil, false
}

// The commands and tests a script may use, with the extension each needs
// ("" none). Anything else, such as the library's always-on test-suite
// commands (test_config_set changes the limits), is refused.
var (
	allowedCommands = map[string]string{
		"require": "", "if": "", "elsif": "", "else": "", "stop": "",
		"keep": "", "discard": "", "redirect": "",
		"fileinto": "fileinto",
		"setflag":  "imap4flags", "addflag": "imap4flags", "removeflag": "imap4flags",
		"set":      "variables",
		"vacation": "vacation",
	}
	allowedTests = map[string]string{
		"address": "", "allof": "", "anyof": "", "exists": "", "false": "",
		"true": "", "header": "", "not": "", "size": "",
		"envelope": "envelope",
		"string":   "variables",
	}
)

// block checks a list of commands and replaces the actions this package
// runs itself (keep, fileinto, discard, vacation) by hooks.
func (c *compiler) block(cmds []parser.Cmd) ([]parser.Cmd, error) {
	out := make([]parser.Cmd, 0, len(cmds))
	prevIf := false
	for _, cmd := range cmds {
		name := strings.ToLower(cmd.Id)
		ext, ok := allowedCommands[name]
		if !ok {
			return nil, at(cmd.Position, "unknown command %q", cmd.Id)
		}
		if ext != "" && !c.s.exts[ext] {
			return nil, at(cmd.Position, "%s needs require %q", name, ext)
		}
		if (name == "elsif" || name == "else") && !prevIf {
			return nil, at(cmd.Position, "%s must follow if or elsif", name)
		}
		prevIf = name == "if" || name == "elsif"
		for _, t := range cmd.Tests {
			if err := c.test(t); err != nil {
				return nil, err
			}
		}
		if err := c.checkStrings(cmd.Position, cmd.Args); err != nil {
			return nil, err
		}
		if cmd.Block != nil {
			if name != "if" && name != "elsif" && name != "else" {
				return nil, at(cmd.Position, "%s takes no block", name)
			}
			b, err := c.block(cmd.Block)
			if err != nil {
				return nil, err
			}
			cmd.Block = b
		}
		switch name {
		case "keep", "fileinto", "discard":
			hook, err := c.action(name, cmd)
			if err != nil {
				return nil, err
			}
			cmd = hook
		case "vacation":
			hook, err := c.vacation(cmd)
			if err != nil {
				return nil, err
			}
			cmd = hook
		}
		out = append(out, cmd)
	}
	return out, nil
}

func (c *compiler) test(t parser.Test) error {
	name := strings.ToLower(t.Id)
	ext, ok := allowedTests[name]
	if !ok {
		return at(t.Position, "unknown test %q", t.Id)
	}
	if ext != "" && !c.s.exts[ext] {
		return at(t.Position, "%s needs require %q", name, ext)
	}
	if err := c.checkStrings(t.Position, t.Args); err != nil {
		return err
	}
	for _, sub := range t.Tests {
		if err := c.test(sub); err != nil {
			return err
		}
	}
	return nil
}

// variableRef finds variable references as RFC 5229 §3 writes them.
var variableRef = regexp.MustCompile(`\$\{([a-zA-Z_][a-zA-Z0-9_]*\.(?:(?:[a-zA-Z_][a-zA-Z0-9_]*|[0-9]+)\.)*)?([a-zA-Z_][a-zA-Z0-9_]*|[0-9]+)\}`)

// checkStrings refuses references to variables that do not exist
// (RFC 5229 §3: an unknown namespace is an error): the library would
// panic on them at run time.
func (c *compiler) checkStrings(p lexer.Position, args []parser.Arg) error {
	if !c.s.exts["variables"] {
		return nil
	}
	for _, a := range args {
		list, _ := stringsOf(a)
		for _, s := range list {
			for _, m := range variableRef.FindAllStringSubmatch(s, -1) {
				ns := strings.ToLower(strings.TrimSuffix(m[1], "."))
				switch {
				case ns == "":
				case ns == "envelope" && c.s.exts["envelope"]:
				default:
					return at(p, "unknown variable %q", m[0])
				}
				if len(m[1])+len(m[2]) > maxVariableName {
					return at(p, "variable name %q is too long", m[0])
				}
			}
		}
	}
	return nil
}

// hook is the command that stands for an action: a header test whose
// keys the library expands and hands to Message.HeaderGet, where this
// package sees them (hooks.go). It matches nothing and has an empty
// block, so it changes nothing else; the if-state it leaves matters only
// to a following elsif or else, which block refuses after a non-if.
func (c *compiler) hook(p lexer.Position, keys []string) parser.Cmd {
	return parser.Cmd{
		Position: p,
		Id:       "if",
		Tests: []parser.Test{{
			Position: p,
			Id:       "header",
			Args: []parser.Arg{
				parser.TagArg{Value: "is", Position: p},
				parser.StringListArg{Value: keys, Position: p},
				parser.StringArg{Value: "x", Position: p},
			},
		}},
		Block: []parser.Cmd{},
	}
}

func (c *compiler) key(index int, field byte, value string) string {
	return c.s.marker + ":" + strconv.Itoa(index) + ":" + string(field) + ":" + value
}

// action turns keep, fileinto and discard into a hook. The library's own
// versions get RFC 5232 wrong (fileinto :flags changes the internal
// variable, fileinto without :flags ignores it, discard clears it).
func (c *compiler) action(name string, cmd parser.Cmd) (parser.Cmd, error) {
	idx := len(c.s.actions)
	spec := actionSpec{kind: name[0]}
	keys := []string{c.key(idx, fieldAction, "")}
	var mailbox []string
	args := cmd.Args
	for len(args) > 0 {
		a := args[0]
		args = args[1:]
		if tag, ok := a.(parser.TagArg); ok {
			if !strings.EqualFold(tag.Value, "flags") || name == "discard" {
				return cmd, at(cmd.Position, "%s: unknown tag :%s", name, tag.Value)
			}
			if !c.s.exts["imap4flags"] {
				return cmd, at(cmd.Position, "%s :flags needs require \"imap4flags\"", name)
			}
			if len(args) == 0 || spec.hasFlags {
				return cmd, at(cmd.Position, "%s :flags takes one string list", name)
			}
			flags, ok := stringsOf(args[0])
			if !ok {
				return cmd, at(cmd.Position, "%s :flags takes one string list", name)
			}
			args = args[1:]
			spec.hasFlags = true
			for _, f := range flags {
				keys = append(keys, c.key(idx, fieldFlag, f))
			}
			continue
		}
		s, ok := a.(parser.StringArg)
		if !ok || name != "fileinto" || mailbox != nil {
			return cmd, at(cmd.Position, "%s: unexpected argument", name)
		}
		mailbox = []string{s.Value}
	}
	if name == "fileinto" {
		if mailbox == nil {
			return cmd, at(cmd.Position, "fileinto needs a mailbox name")
		}
		keys = append(keys, c.key(idx, fieldMailbox, mailbox[0]))
	}
	if len(cmd.Tests) > 0 {
		return cmd, at(cmd.Position, "%s takes no test", name)
	}
	c.s.actions = append(c.s.actions, spec)
	// The action index is encoded in the keys; vacation hooks use their
	// own index space.
	return c.hook(cmd.Position, keys), nil
}

// Vacation limits: :days is clamped into [minDays, MaxVacationDays].
const (
	defaultDays = 7
	minDays     = 1
	// MaxVacationDays is the longest :days honoured; replication keeps a
	// vacation record that long.
	MaxVacationDays = 90
)

// vacation checks a vacation command (RFC 5230 §4) and turns it into a
// hook carrying its strings.
func (c *compiler) vacation(cmd parser.Cmd) (parser.Cmd, error) {
	idx := len(c.s.vacations)
	spec := vacationSpec{days: defaultDays}
	keys := []string{c.key(idx, fieldVacation, "")}
	var reason *string
	seen := map[string]bool{}
	args := cmd.Args
	for len(args) > 0 {
		a := args[0]
		args = args[1:]
		tag, isTag := a.(parser.TagArg)
		if !isTag {
			s, ok := a.(parser.StringArg)
			if !ok || reason != nil {
				return cmd, at(cmd.Position, "vacation takes one reason string after its tags")
			}
			reason = &s.Value
			continue
		}
		if reason != nil {
			return cmd, at(cmd.Position, "vacation: tags must come before the reason")
		}
		t := strings.ToLower(tag.Value)
		if seen[t] {
			return cmd, at(cmd.Position, "vacation: :%s given twice", t)
		}
		seen[t] = true
		if t == "mime" {
			return cmd, at(cmd.Position, "vacation :mime is not supported here: give the reason as plain text")
		}
		if len(args) == 0 {
			return cmd, at(cmd.Position, "vacation :%s needs a value", t)
		}
		v := args[0]
		args = args[1:]
		switch t {
		case "days":
			n, ok := v.(parser.NumberArg)
			if !ok {
				return cmd, at(cmd.Position, "vacation :days takes a number")
			}
			spec.days = min(max(n.Value, minDays), MaxVacationDays)
		case "subject", "from", "handle":
			s, ok := v.(parser.StringArg)
			if !ok {
				return cmd, at(cmd.Position, "vacation :%s takes one string", t)
			}
			field := map[string]byte{"subject": fieldSubject, "from": fieldFrom, "handle": fieldHandle}[t]
			keys = append(keys, c.key(idx, field, s.Value))
			spec.hasHandle = spec.hasHandle || t == "handle"
		case "addresses":
			list, ok := stringsOf(v)
			if !ok {
				return cmd, at(cmd.Position, "vacation :addresses takes a string list")
			}
			for _, s := range list {
				keys = append(keys, c.key(idx, fieldAddress, s))
			}
		default:
			return cmd, at(cmd.Position, "vacation: unknown tag :%s", tag.Value)
		}
	}
	if reason == nil {
		return cmd, at(cmd.Position, "vacation needs a reason string")
	}
	if len(cmd.Tests) > 0 {
		return cmd, at(cmd.Position, "vacation takes no test")
	}
	keys = append(keys, c.key(idx, fieldReason, *reason))
	c.s.vacations = append(c.s.vacations, spec)
	return c.hook(cmd.Position, keys), nil
}
