package notify

import (
	"net/url"
	"testing"

	"github.com/corral-dev/corral/internal/approval"
)

func form(payload string) []byte {
	return []byte(url.Values{"payload": {payload}}.Encode())
}

var pressCases = []struct {
	name    string
	payload string
	want    Press
	wantErr bool
}{
	{name: "approve", payload: `{"type":"block_actions","user":{"id":"U1"},"actions":[{"block_id":"corral_approval","action_id":"corral_approve","value":"abc123"}]}`,
		want: Press{User: "U1", ApprovalID: "abc123", Verdict: approval.Approve}},
	{name: "deny", payload: `{"type":"block_actions","user":{"id":"U1"},"actions":[{"block_id":"corral_approval","action_id":"corral_deny","value":"abc123"}]}`,
		want: Press{User: "U1", ApprovalID: "abc123", Verdict: approval.Deny}},
	{name: "other button first", payload: `{"type":"block_actions","user":{"id":"U1"},"actions":[{"block_id":"b","action_id":"x","value":"1"},{"block_id":"corral_approval","action_id":"corral_deny","value":"abc"}]}`,
		want: Press{User: "U1", ApprovalID: "abc", Verdict: approval.Deny}},
	{name: "not block actions", payload: `{"type":"view_submission","user":{"id":"U1"}}`, wantErr: true},
	{name: "no user", payload: `{"type":"block_actions","actions":[{"block_id":"corral_approval","action_id":"corral_approve","value":"abc"}]}`, wantErr: true},
	{name: "bad id", payload: `{"type":"block_actions","user":{"id":"U1"},"actions":[{"block_id":"corral_approval","action_id":"corral_approve","value":"../x"}]}`, wantErr: true},
	{name: "no actions", payload: `{"type":"block_actions","user":{"id":"U1"}}`, wantErr: true},
	{name: "not json", payload: `{`, wantErr: true},
	{name: "wrong types", payload: `{"type":1,"actions":"x"}`, wantErr: true},
}

func TestParsePress(t *testing.T) {
	for _, tc := range pressCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePress(form(tc.payload))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParsePress(%s) = %+v, want an error", tc.payload, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParsePress(%s) = %+v, %v; want %+v", tc.payload, got, err, tc.want)
			}
		})
	}
	if _, err := ParsePress([]byte("%zz")); err == nil {
		t.Error("ParsePress of a broken form succeeded")
	}
}

func FuzzParsePress(f *testing.F) {
	for _, tc := range pressCases {
		f.Add(form(tc.payload))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParsePress(body)
		if err != nil {
			return
		}
		if p.User == "" || !approval.ValidID(p.ApprovalID) || (p.Verdict != approval.Approve && p.Verdict != approval.Deny) {
			t.Fatalf("ParsePress(%q) = %+v: not a valid press", body, p)
		}
	})
}

func TestSlackMessageCarriesButtons(t *testing.T) {
	m := SlackMessage(approval.Approval{ID: "abc", Action: approval.Action{Agent: "a", Target: "t", Arguments: []byte("{\"x\":\"```\"}")}, Quorum: 1})
	if m.Blocks == nil || len(m.Blocks.BlockSet) != 2 {
		t.Fatalf("SlackMessage blocks = %+v, want a section and the buttons", m.Blocks)
	}
}
