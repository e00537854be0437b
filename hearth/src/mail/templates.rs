//! The messages hearth sends itself, each in text and HTML (askama
//! templates in `hearth/templates/mail/`; the HTML ones escape what they
//! insert).

use std::time::Duration;

use askama::Template;

use crate::mail::Mail;

#[derive(Template)]
#[template(path = "mail/verify.txt")]
struct VerifyText<'a> {
    app: &'a str,
    link: &'a str,
    valid_for: &'a str,
}

#[derive(Template)]
#[template(path = "mail/verify.html")]
struct VerifyHtml<'a> {
    app: &'a str,
    link: &'a str,
    valid_for: &'a str,
}

#[derive(Template)]
#[template(path = "mail/reset.txt")]
struct ResetText<'a> {
    app: &'a str,
    link: &'a str,
    valid_for: &'a str,
}

#[derive(Template)]
#[template(path = "mail/reset.html")]
struct ResetHtml<'a> {
    app: &'a str,
    link: &'a str,
    valid_for: &'a str,
}

#[derive(Template)]
#[template(path = "mail/registered.txt")]
struct RegisteredText<'a> {
    app: &'a str,
    login: &'a str,
    recover: &'a str,
}

#[derive(Template)]
#[template(path = "mail/registered.html")]
struct RegisteredHtml<'a> {
    app: &'a str,
    login: &'a str,
    recover: &'a str,
}

#[derive(Template)]
#[template(path = "mail/test.txt")]
struct TestText<'a> {
    app: &'a str,
}

/// "2 days", "1 hour", "30 minutes": how long a link works.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s >= 86_400 && s.is_multiple_of(86_400) {
        (s / 86_400, "day")
    } else if s >= 3600 && s.is_multiple_of(3600) {
        (s / 3600, "hour")
    } else {
        (s.div_ceil(60).max(1), "minute")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

fn render(t: &impl Template) -> Result<String, askama::Error> {
    t.render()
}

/// The email-verification message.
pub fn verify(app: &str, to: &str, link: &str, valid_for: Duration) -> Result<Mail, askama::Error> {
    let valid_for = human(valid_for);
    Ok(Mail {
        to: to.to_owned(),
        subject: format!("Confirm your address for {app}"),
        text: render(&VerifyText {
            app,
            link,
            valid_for: &valid_for,
        })?,
        html: Some(render(&VerifyHtml {
            app,
            link,
            valid_for: &valid_for,
        })?),
        link: Some(link.to_owned()),
    })
}

/// The password-reset message.
pub fn reset(app: &str, to: &str, link: &str, valid_for: Duration) -> Result<Mail, askama::Error> {
    let valid_for = human(valid_for);
    Ok(Mail {
        to: to.to_owned(),
        subject: format!("Reset your {app} password"),
        text: render(&ResetText {
            app,
            link,
            valid_for: &valid_for,
        })?,
        html: Some(render(&ResetHtml {
            app,
            link,
            valid_for: &valid_for,
        })?),
        link: Some(link.to_owned()),
    })
}

/// The message to an address that tried to sign up again.
pub fn registered(app: &str, to: &str, login: &str, recover: &str) -> Result<Mail, askama::Error> {
    Ok(Mail {
        to: to.to_owned(),
        subject: format!("You already have a {app} account"),
        text: render(&RegisteredText {
            app,
            login,
            recover,
        })?,
        html: Some(render(&RegisteredHtml {
            app,
            login,
            recover,
        })?),
        link: Some(login.to_owned()),
    })
}

/// The message `mail test` sends.
pub fn test(app: &str, to: &str) -> Result<Mail, askama::Error> {
    Ok(Mail {
        to: to.to_owned(),
        subject: format!("{app}: test message"),
        text: render(&TestText { app })?,
        html: None,
        link: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_secs(2 * 86_400)), "2 days");
        assert_eq!(human(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human(Duration::from_secs(90 * 60)), "90 minutes");
        assert_eq!(human(Duration::from_secs(10)), "1 minute");
    }

    #[test]
    fn links_are_escaped_in_html_and_plain_in_text() {
        let m = verify(
            "pancake",
            "a@example.com",
            "https://x.example/v?token=a&b=<c>",
            Duration::from_secs(3600),
        )
        .unwrap();
        assert!(
            m.text.contains("https://x.example/v?token=a&b=<c>"),
            "{}",
            m.text
        );
        let html = m.html.unwrap();
        assert!(
            html.contains("token=a&#38;b=&#60;c&#62;") || html.contains("token=a&amp;b=&lt;c&gt;"),
            "{html}"
        );
        assert!(m.text.contains("1 hour"));
    }
}
