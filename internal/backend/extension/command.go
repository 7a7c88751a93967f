package extension

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// commandTimeout bounds one run of an operator's command, so a hung script
// cannot stop the daemon from following other nodes.
const commandTimeout = 30 * time.Second

// maxOutput bounds what is kept of a command's output for logs and for the
// lease's BackendData.
const maxOutput = 64 << 10

// splitWords splits a command line into words the way a shell does for
// plain words and quotes: blanks separate words, '…' groups literally, "…"
// groups with backslash escapes, and a backslash outside quotes escapes the
// next character. Nothing else is special: there are no pipes, redirections,
// globbing or command substitution, because no shell ever runs.
func splitWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words, inWord = append(words, cur.String()), false
				cur.Reset()
			}
			continue
		case c == '\'':
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", line)
			}
			cur.WriteString(line[i+1 : i+1+end])
			i += end + 1
		case c == '"':
			n, err := readDoubleQuoted(line[i+1:], &cur)
			if err != nil {
				return nil, fmt.Errorf("%w in %q", err, line)
			}
			i += n
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		default:
			cur.WriteByte(c)
		}
		inWord = true
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// readDoubleQuoted copies the inside of "…" from s (which starts after the
// opening quote) to b and returns how many bytes it consumed, including the
// closing quote.
func readDoubleQuoted(s string, b *strings.Builder) (int, error) {
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			return i + 1, nil
		case s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`, s[i+1]) >= 0:
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(s[i])
		}
	}
	return 0, fmt.Errorf(`unterminated "`)
}

// command is an operator's command line, split once at start-up so that a
// malformed one is refused before the node joins the network.
type command struct {
	line  string // as configured, for logs
	words []string
}

func parseCommand(key, line string) (*command, error) {
	if strings.TrimSpace(line) == "" {
		return nil, nil
	}
	words, err := splitWords(line)
	if err != nil {
		return nil, fmt.Errorf("extension backend config: %s: %w", key, err)
	}
	return &command{line: line, words: words}, nil
}

// result is one finished run.
type result struct {
	stdout, stderr string
	err            error
}

// run expands $VAR and ${VAR} in each word from vars (then the daemon's own
// environment) after splitting, so a value can never add words or syntax,
// and runs the program directly with vars added to its environment and
// stdin on its standard input.
func (c *command) run(ctx context.Context, vars map[string]string, stdin string) result {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	lookup := func(name string) string {
		if v, ok := vars[name]; ok {
			return v
		}
		return os.Getenv(name)
	}
	args := make([]string, len(c.words))
	for i, w := range c.words {
		args[i] = os.Expand(w, lookup)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = os.Environ()
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return result{stdout: bounded(out.String()), stderr: bounded(errOut.String()), err: err}
}

func bounded(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > maxOutput {
		return s[:maxOutput] + " …(truncated)"
	}
	return s
}

// describe is the log form of a failed run: exit status and output.
func (r result) describe() string {
	return fmt.Sprintf("%v; stdout: %q; stderr: %q", r.err, r.stdout, r.stderr)
}
