"""fal's other app shapes on the platform: `@fal.function(serve=True)` answers at POST /, and an
app inside its project's package imports that package on its replicas."""

from helpers import APPS, deployed


def test_served_functions_answer_at_their_root(cli, http) -> None:
    deployed(cli, f"{APPS}/functions.py::greet", "--user", "walt")
    assert http.post("/walt/greet/", json={"name": "ray", "times": 2}).json() == {"greeting": "hello ray hello ray"}
    assert http.post("/walt/greet", json={"times": 2}).status_code == 422  # fal's validation of the model
    deployed(cli, f"{APPS}/functions.py::counted", "--user", "walt")  # async, with requirements
    assert http.post("/walt/counted/", params={"count": 2000000}).json() == {"digits": 7, "httpx": True}
    refused = cli("deploy", f"{APPS}/functions.py::one_off", "--user", "walt", "--auth", "public")
    assert refused.exit_code != 0 and "without serve=True" in refused.output


def test_an_app_inside_its_projects_package_imports_it_on_the_replica(cli, http) -> None:
    deployed(cli, f"{APPS}/packaged/shop/serving/app.py::Shop", "--user", "walt")
    assert http.post("/walt/shop/", json={"item": "pear"}).json() == {"item": "pear", "price": 5}
